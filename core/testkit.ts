/**
 * Test kit for plugin authors: start a server with given plugins on
 * 127.0.0.1:0, talk to it with a scripted SMTP client over a real socket, and
 * read what was queued.
 *
 *   const t = await startTestServer({ plugins: [myPlugin, ['rcpt-local', { domains: ['example.com'] }]] });
 *   const c = await t.connect();
 *   await c.expect('EHLO client.example', 250);
 *   await c.close(); await t.close();
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import Type from 'typebox';
import type { CoreConfig } from './config-schema.ts';
import { Stage } from './hooks.ts';
import { type Clock, definePlugin, type PluginDefinition } from './plugin.ts';
import { type ListeningAddress, MailServer } from './server.ts';
import { startTestDnsServer, type TestDnsServer, type TestDnsZone } from './testkit-dns.ts';
import type { EnvelopeAttributes, RecipientAttributes } from './types.ts';

export {
  startTestDnsServer,
  type TestDnsName,
  type TestDnsOptions,
  type TestDnsQuery,
  type TestDnsServer,
  type TestDnsZone,
} from './testkit-dns.ts';

/** A plugin given as a value, a bundled/npm name, either with config, or a full config entry. */
export type TestPlugin =
  | PluginDefinition
  | string
  | readonly [PluginDefinition | string, Record<string, unknown>]
  | {
      readonly plugin: PluginDefinition | string;
      readonly config?: Record<string, unknown>;
      readonly id?: string;
      readonly listeners?: readonly string[];
      readonly timeout?: number;
    };

/** Config as written in a file: everything with a default may be left out. */
export type DeepPartial<T> = T extends readonly (infer U)[]
  ? readonly DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

export interface TestServerOptions {
  readonly plugins?: readonly TestPlugin[];
  /** Core settings merged over the test defaults (one listener on 127.0.0.1:0, short timeouts). */
  readonly config?: DeepPartial<Omit<CoreConfig, 'plugins'>>;
  /** Add a queue plugin at the end that keeps queued messages in memory (default true). */
  readonly capture?: boolean;
  /** Include the ENHANCEDSTATUSCODES and PIPELINING plugins first (default true). */
  readonly standardExtensions?: boolean;
  readonly logger?: Logger;
  /** Injected clock (drive retries and timers in tests). */
  readonly clock?: Clock;
  /** Injected random source (`api.server.random`): deterministic sampling in tests. */
  readonly random?: () => number;
  /**
   * The server's data directory. Default: a new temporary one, removed on
   * close. A given one is kept, so a second server can start on what the
   * first left (state that must survive a restart).
   */
  readonly dataDir?: string;
  /**
   * Point the server's DNS resolver at a test DNS server: a running one, or a
   * zone to start one for (closed with the test server). Sets `dns.servers`,
   * and DNS timeouts that fit in the test hook timeout (`timeout` 500 ms,
   * `attempts` 2); `config.dns` overrides them.
   */
  readonly dns?: TestDnsServer | TestDnsZone;
  /**
   * Catch faults plugins raise outside their hook calls, as `mailframe start`
   * does (default false: the test runner then reports such a fault as an
   * unhandled error, which is what a plugin's own tests want to see).
   */
  readonly catchFaults?: boolean;
}

export interface CapturedMessage {
  readonly id: string;
  readonly from: string;
  readonly recipients: readonly string[];
  readonly recipientAttributes: readonly RecipientAttributes[];
  readonly attributes: EnvelopeAttributes;
  /** The whole message as queued, prepended headers included. */
  readonly data: Buffer;
  /** `data` as UTF-8 text. */
  readonly text: string;
}

export interface TestServer {
  readonly server: MailServer;
  readonly host: string;
  readonly port: number;
  /** The test DNS server the server resolves with (the `dns` option). */
  readonly dns: TestDnsServer | undefined;
  /** Messages the capture queue accepted, in order. */
  readonly queued: readonly CapturedMessage[];
  /** Resolves once at least `n` messages were queued. */
  waitForMessages(n: number, timeoutMs?: number): Promise<readonly CapturedMessage[]>;
  connect(opts?: { waitGreeting?: boolean; listener?: string }): Promise<SmtpClient>;
  close(): Promise<void>;
}

export interface SmtpReply {
  readonly code: number;
  /** Enhanced status code of the last line, if present. */
  readonly enhanced: string | undefined;
  /** Text of each line, without code and enhanced code. */
  readonly lines: readonly string[];
  /** The reply exactly as received. */
  readonly raw: string;
}

/** A raw-socket SMTP client for conversations in tests. */
export class SmtpClient {
  readonly socket: Socket;
  #buffer = '';
  #waiters: Array<() => void> = [];
  #ended = false;
  /** The greeting, when `connect` waited for it. */
  greeting: SmtpReply | undefined;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => {
      this.#buffer += s;
      this.#wake();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const fn of w) fn();
  }

  /** Whether the server closed the connection. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Send raw text (no CRLF added). */
  send(raw: string | Buffer): void {
    this.socket.write(raw);
  }

  /** Read one complete (possibly multi-line) reply. Rejects if the connection closes first or after `timeoutMs`. */
  async read(timeoutMs = 5000): Promise<SmtpReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const parsed = takeReply(this.#buffer);
      if (parsed) {
        this.#buffer = parsed.rest;
        return parsed.reply;
      }
      if (this.#ended)
        throw new Error(
          `connection closed while waiting for a reply (buffer: ${JSON.stringify(this.#buffer)})`,
        );
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`no complete reply within ${timeoutMs} ms (buffer: ${JSON.stringify(this.#buffer)})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Read `n` replies (after a pipelined group). */
  async readMany(n: number, timeoutMs?: number): Promise<SmtpReply[]> {
    const out: SmtpReply[] = [];
    for (let i = 0; i < n; i++) out.push(await this.read(timeoutMs));
    return out;
  }

  /** Send one command line and read its reply. */
  async command(line: string): Promise<SmtpReply> {
    this.send(`${line}\r\n`);
    return this.read();
  }

  /** Send a command and assert the reply code (and enhanced code, if given). Returns the reply. */
  async expect(line: string, code: number, enhanced?: string): Promise<SmtpReply> {
    const r = await this.command(line);
    if (r.code !== code || (enhanced !== undefined && r.enhanced !== enhanced)) {
      throw new Error(`"${line}": expected ${code}${enhanced ? ` ${enhanced}` : ''}, got ${r.raw.trim()}`);
    }
    return r;
  }

  /** Send a whole message after DATA/354 with dot-stuffing; returns the final reply. */
  async sendData(body: string): Promise<SmtpReply> {
    let text = body.replace(/\r?\n/g, '\r\n');
    if (!text.endsWith('\r\n')) text += '\r\n';
    text = text.replace(/^\./gm, '..');
    this.send(`${text}.\r\n`);
    return this.read();
  }

  /** Wait until the server closes the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('connection still open');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Everything received but not yet read as a reply. */
  get pending(): string {
    return this.#buffer;
  }

  async close(): Promise<void> {
    if (!this.#ended) {
      this.socket.end();
      this.socket.destroy();
    }
  }
}

/** Parse one complete reply off the front of `buffer`. */
export function takeReply(buffer: string): { reply: SmtpReply; rest: string } | undefined {
  let pos = 0;
  const lines: string[] = [];
  for (;;) {
    const eol = buffer.indexOf('\r\n', pos);
    if (eol < 0) return undefined;
    const line = buffer.slice(pos, eol);
    pos = eol + 2;
    lines.push(line);
    if (line.length < 4 || line[3] !== '-') break;
  }
  const last = lines[lines.length - 1] as string;
  const code = Number.parseInt(last.slice(0, 3), 10);
  const texts = lines.map((l) => l.slice(4));
  const m = /^([245]\.\d{1,3}\.\d{1,3})(?: |$)/.exec(texts[texts.length - 1] ?? '');
  const enhanced = m?.[1];
  const stripped = enhanced ? texts.map((t) => t.replace(/^[245]\.\d{1,3}\.\d{1,3} ?/, '')) : texts;
  return { reply: { code, enhanced, lines: stripped, raw: buffer.slice(0, pos) }, rest: buffer.slice(pos) };
}

/** Open a raw client connection; by default waits for and checks the 220 greeting. */
export async function connectClient(
  port: number,
  host = '127.0.0.1',
  waitGreeting = true,
): Promise<SmtpClient> {
  const socket = netConnect({ port, host });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const client = new SmtpClient(socket);
  if (waitGreeting) client.greeting = await client.read();
  return client;
}

function normalise(p: TestPlugin): {
  plugin: PluginDefinition | string;
  config?: Record<string, unknown>;
  id?: string;
  listeners?: readonly string[];
  timeout?: number;
} {
  if (typeof p === 'string') return { plugin: p };
  if (Array.isArray(p))
    return { plugin: p[0] as PluginDefinition | string, config: p[1] as Record<string, unknown> };
  if ('register' in (p as object)) return { plugin: p as PluginDefinition };
  return p as ReturnType<typeof normalise>;
}

function isTestDnsServer(x: TestDnsServer | TestDnsZone): x is TestDnsServer {
  return typeof (x as Partial<TestDnsServer>).count === 'function';
}

/** Merge plain objects recursively (arrays and other values are replaced). */
function merge(base: Record<string, unknown>, over: object): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    const isObj = (x: unknown): x is Record<string, unknown> =>
      typeof x === 'object' && x !== null && !Array.isArray(x);
    out[k] = isObj(b) && isObj(v) ? merge(b, v) : v;
  }
  return out;
}

/** Start a server for a test. Remember `await t.close()`. */
export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const ownDns = opts.dns !== undefined && !isTestDnsServer(opts.dns);
  const dns =
    opts.dns === undefined || isTestDnsServer(opts.dns) ? opts.dns : await startTestDnsServer(opts.dns);
  const ownDataDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'mailframe-test-')));
  const queued: CapturedMessage[] = [];
  let waiters: Array<() => void> = [];
  const definitions = new Map<string, PluginDefinition>();
  const entries: Array<Record<string, unknown>> = [];
  const add = (p: TestPlugin) => {
    const n = normalise(p);
    let name: string;
    if (typeof n.plugin === 'string') name = n.plugin;
    else {
      name = n.plugin.name;
      definitions.set(name, n.plugin);
    }
    const entry: Record<string, unknown> = { plugin: name };
    if (n.config) entry['config'] = n.config;
    if (n.id) entry['id'] = n.id;
    if (n.listeners) entry['listeners'] = n.listeners;
    if (n.timeout) entry['timeout'] = n.timeout;
    entries.push(entry);
  };
  if (opts.standardExtensions !== false) {
    add('enhanced-status-codes');
    add('pipelining');
  }
  for (const p of opts.plugins ?? []) add(p);
  if (opts.capture !== false) {
    add(
      definePlugin({
        name: 'testkit-capture',
        schema: Type.Object({}),
        register(api) {
          let seq = 0;
          api.hooks.queue.tap(
            async (tx, message) => {
              const data = await message.read();
              const id = `test-${++seq}`;
              queued.push({
                id,
                from: tx.from.address?.address ?? '',
                recipients: tx.recipients.map((r) => r.address.address),
                recipientAttributes: tx.recipients.map((r) => r.attributes),
                attributes: { ...tx.attributes },
                data,
                text: data.toString('utf8'),
              });
              const w = waiters;
              waiters = [];
              for (const fn of w) fn();
              return { id };
            },
            { stage: Stage.LAST },
          );
        },
      }),
    );
  }
  const config = {
    ...merge(
      {
        hostname: 'mx.test.example',
        listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
        timeouts: { command: 10000, data: 10000, hook: 2000, shutdownGrace: 1000 },
        ...(dns ? { dns: { servers: [dns.address], timeout: 500, attempts: 2 } } : {}),
      },
      opts.config ?? {},
    ),
    dataDir,
    plugins: entries,
  };
  let server: MailServer | undefined;
  let addresses: ListeningAddress[];
  try {
    server = await MailServer.create({
      config,
      definitions,
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.random ? { random: opts.random } : {}),
      ...(opts.catchFaults ? { catchFaults: true } : {}),
    });
    addresses = await server.listen();
  } catch (err) {
    // A server that did not start leaves nothing behind: no plugin open, no data directory.
    await server?.close(0);
    if (ownDataDir) await rm(dataDir, { recursive: true, force: true });
    if (ownDns) await dns?.close();
    throw err;
  }
  const first = addresses[0];
  if (!first) throw new Error('no listener');
  return {
    server,
    host: first.host,
    port: first.port,
    dns,
    queued,
    async waitForMessages(n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (queued.length < n) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`expected ${n} queued messages, have ${queued.length}`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      return queued;
    },
    async connect(o = {}) {
      const a = o.listener ? addresses.find((x) => x.name === o.listener) : first;
      if (!a) throw new Error(`no listener ${o.listener}`);
      return connectClient(
        a.port,
        a.host === '::' || a.host === '0.0.0.0' ? '127.0.0.1' : a.host,
        o.waitGreeting !== false,
      );
    },
    async close() {
      await server.close(200);
      if (ownDataDir) await rm(dataDir, { recursive: true, force: true });
      if (ownDns) await dns?.close();
    },
  };
}
