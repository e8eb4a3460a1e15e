/**
 * The server's certificates as ready-made TLS contexts: a default one and one
 * per SNI name. `reload()` rebuilds them from the files; a reload that fails
 * (unreadable file, key not matching the certificate) keeps the old contexts.
 */
import { constants, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createSecureContext, type SecureContext, type SecureVersion } from 'node:tls';
import type { SniCallback } from '../../core/plugin.ts';

export interface CertificateFiles {
  /** PEM certificate chain, server certificate first. */
  readonly cert: string;
  /** PEM private key. */
  readonly key: string;
}

export interface CertificateSettings {
  /** The default certificate: files, or PEM text held in memory (a generated self-signed one). */
  readonly default: CertificateFiles | { readonly inline: { readonly cert: string; readonly key: string } };
  /** Other certificates by the server name a client asks for (SNI). `*.example.com` matches one label. */
  readonly sni?: Readonly<Record<string, CertificateFiles>>;
  readonly minVersion: SecureVersion;
  readonly ciphers?: string;
}

/** What a loaded certificate looks like, for logs and tests. */
export interface CertificateSummary {
  /** `default` or the SNI name. */
  readonly name: string;
  readonly subject: string;
  readonly fingerprint256: string;
  readonly validTo: Date;
}

export type ReloadOutcome = 'reloaded' | 'unchanged' | 'failed';

interface StoreEvents {
  /** New contexts are in use. */
  reloaded: [summaries: readonly CertificateSummary[]];
  /** A reload failed; the previous contexts stay in use. */
  reloadFailed: [error: Error];
}

interface Loaded {
  readonly defaultContext: SecureContext;
  readonly byName: ReadonlyMap<string, SecureContext>;
  readonly contents: ReadonlyMap<string, Buffer>;
  readonly summaries: readonly CertificateSummary[];
}

export class CertificateStore extends EventEmitter<StoreEvents> {
  readonly #settings: CertificateSettings;
  #loaded: Loaded;
  #reloading: Promise<ReloadOutcome> | undefined;
  #again = false;

  private constructor(settings: CertificateSettings, loaded: Loaded) {
    super();
    this.#settings = settings;
    this.#loaded = loaded;
  }

  /** Load every certificate; throws when one cannot be used (start-up fails). */
  static async open(settings: CertificateSettings): Promise<CertificateStore> {
    return new CertificateStore(settings, await load(settings));
  }

  /** Absolute paths of every file the contexts come from. */
  get files(): string[] {
    return [...this.#loaded.contents.keys()];
  }

  get summaries(): readonly CertificateSummary[] {
    return this.#loaded.summaries;
  }

  /** The context for a server name the client sent (SNI), or the default one. */
  contextFor(servername: string | undefined): SecureContext {
    const { byName, defaultContext } = this.#loaded;
    if (!servername || byName.size === 0) return defaultContext;
    const name = servername.toLowerCase().replace(/\.$/, '');
    const exact = byName.get(name);
    if (exact) return exact;
    const dot = name.indexOf('.');
    const wildcard = dot > 0 ? byName.get(`*${name.slice(dot)}`) : undefined;
    return wildcard ?? defaultContext;
  }

  readonly sniCallback: SniCallback = (servername, cb) => {
    cb(null, this.contextFor(servername));
  };

  /** Options for a server-side TLS socket, with the contexts current right now. */
  serverOptions(): { secureContext: SecureContext; SNICallback: SniCallback; minVersion: SecureVersion } {
    return {
      secureContext: this.#loaded.defaultContext,
      SNICallback: this.sniCallback,
      minVersion: this.#settings.minVersion,
    };
  }

  /**
   * Re-read the files and switch to new contexts if they changed. Concurrent
   * calls share one reload (and one more runs afterwards if asked meanwhile).
   */
  reload(): Promise<ReloadOutcome> {
    if (this.#reloading) {
      this.#again = true;
      return this.#reloading;
    }
    const run = async (): Promise<ReloadOutcome> => {
      let outcome: ReloadOutcome;
      do {
        this.#again = false;
        outcome = await this.#reloadOnce();
      } while (this.#again);
      return outcome;
    };
    this.#reloading = run().finally(() => {
      this.#reloading = undefined;
    });
    return this.#reloading;
  }

  async #reloadOnce(): Promise<ReloadOutcome> {
    let next: Loaded;
    try {
      const contents = await readAll(this.#settings);
      if (sameContents(contents, this.#loaded.contents)) return 'unchanged';
      next = build(this.#settings, contents);
    } catch (err) {
      this.emit('reloadFailed', err instanceof Error ? err : new Error(String(err)));
      return 'failed';
    }
    this.#loaded = next;
    this.emit('reloaded', next.summaries);
    return 'reloaded';
  }
}

type Source = CertificateSettings['default'];

function pairs(settings: CertificateSettings): Array<[string, Source]> {
  const list: Array<[string, Source]> = [['default', settings.default]];
  for (const [name, files] of Object.entries(settings.sni ?? {})) {
    list.push([name.toLowerCase().replace(/\.$/, ''), files]);
  }
  return list;
}

async function readAll(settings: CertificateSettings): Promise<Map<string, Buffer>> {
  const contents = new Map<string, Buffer>();
  for (const [, source] of pairs(settings)) {
    if ('inline' in source) continue;
    for (const path of [resolve(source.cert), resolve(source.key)]) {
      if (!contents.has(path)) contents.set(path, await readFile(path));
    }
  }
  return contents;
}

function material(source: Source, contents: ReadonlyMap<string, Buffer>): { cert: Buffer; key: Buffer } {
  if ('inline' in source)
    return { cert: Buffer.from(source.inline.cert), key: Buffer.from(source.inline.key) };
  return {
    cert: contents.get(resolve(source.cert)) as Buffer,
    key: contents.get(resolve(source.key)) as Buffer,
  };
}

function sameContents(a: ReadonlyMap<string, Buffer>, b: ReadonlyMap<string, Buffer>): boolean {
  if (a.size !== b.size) return false;
  for (const [path, buf] of a) {
    const other = b.get(path);
    if (!other?.equals(buf)) return false;
  }
  return true;
}

/**
 * Options every context gets. TLS 1.2 renegotiation is refused: SMTP has no
 * use for it, and each client-initiated one costs the server a handshake
 * (a CPU denial of service). TLS 1.3 has no renegotiation at all. The SNI
 * contexts carry it too, though the option already comes from the default
 * context the connection starts with.
 */
const SECURE_OPTIONS = constants.SSL_OP_NO_RENEGOTIATION;

function build(settings: CertificateSettings, contents: ReadonlyMap<string, Buffer>): Loaded {
  let defaultContext: SecureContext | undefined;
  const byName = new Map<string, SecureContext>();
  const summaries: CertificateSummary[] = [];
  for (const [name, source] of pairs(settings)) {
    const { cert, key } = material(source, contents);
    let context: SecureContext;
    try {
      context = createSecureContext({
        cert,
        key,
        minVersion: settings.minVersion,
        secureOptions: SECURE_OPTIONS,
        ...(settings.ciphers === undefined ? {} : { ciphers: settings.ciphers }),
      });
    } catch (err) {
      // OpenSSL's message names the problem (e.g. "key values mismatch"), never key material.
      const where = 'inline' in source ? 'generated' : source.cert;
      throw new Error(`certificate "${name}" (${where}): ${err instanceof Error ? err.message : err}`);
    }
    const x509 = new X509Certificate(cert);
    summaries.push({
      name,
      subject: x509.subject.replace(/\n/g, ', '),
      fingerprint256: x509.fingerprint256,
      validTo: x509.validToDate,
    });
    if (name === 'default') defaultContext = context;
    else byName.set(name, context);
  }
  return { defaultContext: defaultContext as SecureContext, byName, contents, summaries };
}

async function load(settings: CertificateSettings): Promise<Loaded> {
  return build(settings, await readAll(settings));
}
