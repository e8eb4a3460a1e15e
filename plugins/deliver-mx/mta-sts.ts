/**
 * MTA-STS (RFC 8461): policy discovery, fetching and a cache that survives
 * restarts. mailauth parses the TXT record and the policy file and matches MX
 * names (`mailauth/lib/mta-sts`); the fetch, the cache and enforcement are ours.
 *
 * - discovery: the `_mta-sts.<domain>` TXT record (`v=STSv1; id=...`), through
 *   the server's resolver (RFC 8461 3.1);
 * - fetch: `https://mta-sts.<domain>/.well-known/mta-sts.txt` with `node:https`;
 *   the certificate must verify for `mta-sts.<domain>` against the default CAs
 *   (plus a configured CA file); HTTP 200 only (no redirects), `text/plain`,
 *   at most 64 KiB, within a time limit (RFC 8461 3.3);
 * - cache: per domain for the policy's `max_age`, in a JSON file under the
 *   data directory written atomically; a policy is fetched again when the TXT
 *   `id` changes or it expired; an unexpired cached policy is used when the
 *   TXT record is gone or the fetch fails (RFC 8461 5.1).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { dirname } from 'node:path';
import { rootCertificates } from 'node:tls';
import { parsePolicy, resolvePolicy, validateMx } from 'mailauth/lib/mta-sts.js';
import type { Logger } from 'pino';
import type { DnsResolver } from '../../core/dns/types.ts';
import type { Clock } from '../../core/plugin.ts';
import { certificateFailure, checkDnsId } from '../outbound/connection.ts';
import type { TlsFailureType } from '../outbound/tls-report.ts';

export type StsMode = 'enforce' | 'testing' | 'none';

/** A policy as fetched and cached. */
export interface StsPolicy {
  readonly domain: string;
  readonly id: string;
  readonly mode: StsMode;
  readonly mx: readonly string[];
  readonly maxAge: number;
  /** ms since the epoch (server clock). */
  readonly fetchedAt: number;
  readonly expires: number;
  /** The policy file's lines, as TLS reports quote them (`policy-string`). */
  readonly lines: readonly string[];
}

type StsFailure = Extract<
  TlsFailureType,
  'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid'
>;

/** What discovery found for a domain. */
export type StsLookup =
  /** No policy applies (none published, or none could be had and none is cached). */
  | { readonly kind: 'none'; readonly failure?: { readonly type: StsFailure; readonly reason: string } }
  /** A policy applies; `failure` when a newer one could not be fetched and the cached one is used. */
  | {
      readonly kind: 'policy';
      readonly policy: StsPolicy;
      readonly cached: boolean;
      readonly failure?: { readonly type: StsFailure; readonly reason: string };
    };

export interface MtaStsOptions {
  readonly dns: DnsResolver;
  readonly clock: Clock;
  /** The cache file. */
  readonly file: string;
  /** More CA certificates (PEM) to trust for policy hosts, besides the default ones. */
  readonly ca: string | Buffer | undefined;
  /** HTTPS port of policy hosts: 443, another only in tests. */
  readonly port: number;
  /** Milliseconds for the whole fetch. */
  readonly timeout: number;
  readonly log: Logger;
}

/** RFC 8461 3.3: policy bodies larger than this are refused. */
const MAX_POLICY_OCTETS = 64 * 1024;
const POLICY_PATH = '/.well-known/mta-sts.txt';
/** After a failed fetch, the same policy id is not fetched again for this long (ms). */
const FETCH_RETRY_DELAY = 10 * 60 * 1000;

/** Does the policy allow an MX host of this name (RFC 8461 4.1: exact, or `*.` for one left-most label)? */
export function allowsMx(policy: StsPolicy, name: string): boolean {
  return validateMx(name, { mode: policy.mode, mx: [...policy.mx] }).valid;
}

class FetchError extends Error {
  readonly type: StsFailure;
  constructor(type: StsFailure, message: string) {
    super(message);
    this.type = type;
  }
}

export class MtaStsPolicies {
  readonly #o: MtaStsOptions;
  readonly #cache = new Map<string, StsPolicy>();
  readonly #inflight = new Map<string, Promise<StsLookup>>();
  /** Domains whose policy `id` could not be fetched, until when not to try again. */
  readonly #failed = new Map<string, { readonly id: string; readonly until: number }>();
  #writing: Promise<void> = Promise.resolve();

  constructor(options: MtaStsOptions) {
    this.#o = options;
  }

  /** Read the cache file (a missing or broken file is an empty cache). */
  async load(): Promise<void> {
    let raw: string;
    try {
      raw = await readFile(this.#o.file, 'utf8');
    } catch {
      return;
    }
    try {
      const data = JSON.parse(raw) as { policies?: unknown };
      const now = this.#o.clock.now();
      for (const p of Array.isArray(data.policies) ? data.policies : []) {
        if (validCached(p) && p.expires > now) this.#cache.set(p.domain, p);
      }
    } catch (err) {
      this.#o.log.warn({ err, file: this.#o.file }, 'MTA-STS cache unreadable; starting empty');
    }
  }

  /** The policy that applies to `domain` now; one discovery at a time per domain. */
  lookup(domain: string): Promise<StsLookup> {
    const pending = this.#inflight.get(domain);
    if (pending) return pending;
    const started = this.#lookup(domain).finally(() => this.#inflight.delete(domain));
    this.#inflight.set(domain, started);
    return started;
  }

  async #lookup(domain: string): Promise<StsLookup> {
    const now = this.#o.clock.now();
    const held = this.#cache.get(domain);
    const cached = held && held.expires > now ? held : undefined;
    const useCached = (failure?: { type: StsFailure; reason: string }): StsLookup =>
      cached
        ? { kind: 'policy', policy: cached, cached: true, ...(failure ? { failure } : {}) }
        : { kind: 'none', ...(failure ? { failure } : {}) };

    let id: string | false;
    try {
      id = await resolvePolicy(domain, { resolver: this.#txtResolver(), strict: true });
    } catch (err) {
      // A DNS failure or several records: no policy discovered now (RFC 8461 3.1); a cached one still holds.
      this.#o.log.debug({ domain, err: String(err) }, 'MTA-STS TXT lookup failed');
      return useCached();
    }
    if (id === false) return useCached();
    if (cached && cached.id === id) return useCached();
    const failed = this.#failed.get(domain);
    if (failed && failed.id === id && failed.until > now) return useCached();

    try {
      const text = await this.#fetch(domain);
      const parsed = parseOrThrow(text);
      const fetchedAt = this.#o.clock.now();
      const policy: StsPolicy = {
        domain,
        id,
        mode: parsed.mode,
        mx: parsed.mx ?? [],
        maxAge: parsed.maxAge ?? 0,
        fetchedAt,
        expires: fetchedAt + (parsed.maxAge ?? 0) * 1000,
        lines: text
          .split(/\r?\n/)
          .map((l) => l.trim())
          .filter((l) => l !== ''),
      };
      this.#cache.set(domain, policy);
      this.#failed.delete(domain);
      await this.#save();
      this.#o.log.info(
        { domain, id, mode: policy.mode, mx: policy.mx, maxAge: policy.maxAge },
        'MTA-STS policy fetched',
      );
      return { kind: 'policy', policy, cached: false };
    } catch (err) {
      const failure =
        err instanceof FetchError
          ? { type: err.type, reason: err.message }
          : { type: 'sts-policy-fetch-error' as const, reason: String(err) };
      const until = this.#o.clock.now() + FETCH_RETRY_DELAY;
      for (const [name, f] of this.#failed) if (f.until <= now) this.#failed.delete(name);
      this.#failed.set(domain, { id, until });
      this.#o.log.info(
        { domain, id, failure: failure.type, reason: failure.reason },
        'MTA-STS policy not fetched',
      );
      return useCached(failure);
    }
  }

  /** The server's resolver in the shape mailauth asks for (errors with `ENOTFOUND`/`ENODATA` codes). */
  #txtResolver(): (name: string, type: string) => Promise<string[]> {
    return async (name) => {
      const r = await this.#o.dns.lookup(name, 'TXT');
      if (r.kind === 'answer') return [...r.records];
      const code = r.kind === 'nxdomain' ? 'ENOTFOUND' : r.kind === 'nodata' ? 'ENODATA' : 'ESERVFAIL';
      throw Object.assign(new Error(`TXT ${name}: ${r.kind}`), { code });
    };
  }

  async #fetch(domain: string): Promise<string> {
    const host = `mta-sts.${domain}`;
    const address = await this.#address(host);
    const extra = this.#o.ca;
    return new Promise<string>((resolve, reject) => {
      let done = false;
      const finish = (err: FetchError | undefined, text?: string) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) {
          req.destroy();
          reject(err);
        } else resolve(text as string);
      };
      const req = request(
        {
          host: address,
          port: this.#o.port,
          path: POLICY_PATH,
          method: 'GET',
          servername: host,
          headers: { host, accept: 'text/plain' },
          rejectUnauthorized: true,
          // DNS-ID only, a wildcard only as the whole left-most label (RFC 8461 3.3).
          checkServerIdentity: checkDnsId,
          ...(extra === undefined ? {} : { ca: [...rootCertificates, extra.toString()] }),
          // A fresh connection: never one verified with other options.
          agent: false,
        },
        (res) => {
          if (res.statusCode !== 200) {
            // Redirects are not followed (RFC 8461 3.3).
            return finish(new FetchError('sts-policy-fetch-error', `HTTP status ${res.statusCode}`));
          }
          const type = (res.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
          if (type !== 'text/plain') {
            return finish(
              new FetchError('sts-policy-invalid', `media type ${type || 'missing'}, not text/plain`),
            );
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_POLICY_OCTETS) {
              finish(new FetchError('sts-policy-invalid', `policy larger than ${MAX_POLICY_OCTETS} octets`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('end', () => finish(undefined, Buffer.concat(chunks).toString('utf8')));
          res.on('error', (err) => finish(new FetchError('sts-policy-fetch-error', err.message)));
        },
      );
      const timer = setTimeout(
        () => finish(new FetchError('sts-policy-fetch-error', `no policy within ${this.#o.timeout} ms`)),
        this.#o.timeout,
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        const code = err.code ?? '';
        const webpki = certificateFailure(code) !== 'validation-failure' || /CERT|SSL|TLS/.test(code);
        finish(
          new FetchError(
            webpki ? 'sts-webpki-invalid' : 'sts-policy-fetch-error',
            `${code} ${err.message}`.trim(),
          ),
        );
      });
      req.end();
    });
  }

  async #address(host: string): Promise<string> {
    for (const type of ['A', 'AAAA'] as const) {
      const r = await this.#o.dns.lookup(host, type);
      if (r.kind === 'answer' && r.records[0] !== undefined) return r.records[0];
    }
    throw new FetchError('sts-policy-fetch-error', `${host} has no address`);
  }

  /** Write the cache aside and rename it over the old one; writes run one after another. */
  #save(): Promise<void> {
    const file = this.#o.file;
    const now = this.#o.clock.now();
    // Expired policies and failures are forgotten here too, so memory holds only what still counts.
    for (const [domain, p] of this.#cache) if (p.expires <= now) this.#cache.delete(domain);
    for (const [domain, f] of this.#failed) if (f.until <= now) this.#failed.delete(domain);
    const next = this.#writing.then(async () => {
      const policies = [...this.#cache.values()].filter((p) => p.expires > now);
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        await mkdir(dirname(file), { recursive: true });
        await writeFile(tmp, `${JSON.stringify({ version: 1, policies }, null, 1)}\n`, { flush: true });
        await rename(tmp, file);
      } catch (err) {
        this.#o.log.warn({ err, file }, 'MTA-STS cache not saved');
      }
    });
    this.#writing = next;
    return next;
  }
}

function parseOrThrow(text: string): { mode: StsMode; mx?: string[]; maxAge?: number } {
  try {
    return parsePolicy(text, { strict: true });
  } catch (err) {
    throw new FetchError('sts-policy-invalid', err instanceof Error ? err.message : String(err));
  }
}

function validCached(p: unknown): p is StsPolicy {
  if (typeof p !== 'object' || p === null) return false;
  const o = p as Record<string, unknown>;
  return (
    typeof o['domain'] === 'string' &&
    typeof o['id'] === 'string' &&
    (o['mode'] === 'enforce' || o['mode'] === 'testing' || o['mode'] === 'none') &&
    Array.isArray(o['mx']) &&
    o['mx'].every((m) => typeof m === 'string') &&
    typeof o['maxAge'] === 'number' &&
    typeof o['fetchedAt'] === 'number' &&
    typeof o['expires'] === 'number' &&
    Array.isArray(o['lines'])
  );
}
