/**
 * Helpers for the queue tests: a server with queue-fs and a fake clock, a
 * delivery plugin whose answers the test scripts, a stand-in for the DSN
 * extension's parameters, and a small SMTP sender.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Type from 'typebox';
import { expect } from 'vitest';
import { runQueueCli } from '../../bin/queue-cli.ts';
import { definePlugin, type PluginDefinition } from '../../core/plugin.ts';
import type { Reply } from '../../core/reply.ts';
import { MailServer } from '../../core/server.ts';
import { connectClient } from '../../core/testkit.ts';
import type { DeliveryJob, DeliveryReport } from '../../core/types.ts';
import type { QueueService } from '../../plugins/queue/types.ts';
import { usePostgres } from '../helpers/postgres.ts';
import { useScope } from '../helpers/scope.ts';

export class FakeClock {
  t: number;
  constructor(start = Date.parse('2026-03-02T10:00:00.000Z')) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** A job as the test delivery plugin saw it, with the message read out. */
export interface SeenJob {
  readonly job: DeliveryJob;
  readonly recipients: readonly string[];
  readonly message: string;
  readonly at: number;
}

export type DeliverBehaviour = (
  job: DeliveryJob,
  message: string,
) => DeliveryReport | Reply | undefined | Promise<DeliveryReport | Reply | undefined>;

const deliverAll: DeliverBehaviour = (job) => ({
  results: job.recipients.map((r) => ({
    recipient: r.address,
    status: 'delivered' as const,
    reply: { code: 250, enhanced: '2.0.0', text: 'OK' },
  })),
});

/**
 * A delivery plugin that records every job it claims and answers with
 * `behaviour` (default: every recipient delivered). With `onlyRoute` it claims
 * only jobs routed to its instance name.
 */
export class Deliverer {
  readonly seen: SeenJob[] = [];
  behaviour: DeliverBehaviour = deliverAll;
  readonly plugin: PluginDefinition;

  constructor(clock: FakeClock, opts: { name?: string; onlyRoute?: boolean } = {}) {
    this.plugin = definePlugin({
      name: opts.name ?? 'test-deliver',
      schema: Type.Object({}),
      register: (api) => {
        api.hooks.deliver.tap(async (job) => {
          if (opts.onlyRoute && job.route !== api.name) return undefined;
          const chunks: Buffer[] = [];
          // Taken apart from the job, as a plugin may: `stream` must not depend on `this`.
          const { stream } = job;
          for await (const c of stream()) chunks.push(c as Buffer);
          const message = Buffer.concat(chunks).toString('utf8');
          this.seen.push({ job, recipients: job.recipients.map((r) => r.address), message, at: clock.now() });
          return this.behaviour(job, message);
        });
      },
    });
  }

  /** Jobs seen for messages from `from` ('' for bounces). */
  from(from: string): SeenJob[] {
    return this.seen.filter((s) => s.job.from === from);
  }
}

/**
 * A queue backend the behaviour tests run against: its plugin name and the
 * config that makes its queue belong to `dataDir` (a server started again on
 * the same directory finds the same queue).
 */
export interface QueueStoreKind {
  readonly name: 'queue-fs' | 'queue-pg';
  config(dataDir: string): Promise<Record<string, unknown>>;
}

export const fsStore: QueueStoreKind = {
  name: 'queue-fs',
  config: () => Promise.resolve({ fsync: false }),
};

/** queue-pg on this test file's database, one schema per data directory. */
export function pgStore(databaseUrl: () => Promise<string>): QueueStoreKind {
  return {
    name: 'queue-pg',
    async config(dataDir) {
      const schema = `q_${createHash('sha256').update(dataDir).digest('hex').slice(0, 20)}`;
      return { connectionString: await databaseUrl(), schema };
    },
  };
}

export interface QueueServerOptions {
  readonly clock: FakeClock;
  readonly dataDir: string;
  /** The queue backend (default queue-fs). */
  readonly store?: QueueStoreKind;
  readonly queue?: Record<string, unknown>;
  /** Plugins loaded before queue-fs (delivery plugins, `dsn`): definitions or bundled names. */
  readonly plugins?: ReadonlyArray<
    | PluginDefinition
    | string
    | { plugin: PluginDefinition | string; id: string; config?: Record<string, unknown> }
  >;
  readonly domains?: readonly string[];
}

export interface QueueServer {
  readonly server: MailServer;
  readonly port: number;
  readonly queue: QueueService;
  close(): Promise<void>;
}

export async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'mf-q-'));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface QueueScope {
  /** Every queue backend, for `describe.each`: queue-fs, and queue-pg on a database started on first use. */
  readonly stores: readonly QueueStoreKind[];
  /** A temporary directory removed after the test. */
  tempDir(): Promise<string>;
  /** Start a queue server (as `startQueueServer`) that is closed after the test. */
  start(o: QueueServerOptions): Promise<QueueServer>;
  /** Register any other cleanup. */
  defer(fn: () => unknown): void;
}

/**
 * Queue servers and temporary directories for one test, closed and removed
 * after it (latest first, so a server closes before its directory goes). Call
 * once at the top of a test file.
 */
export function useQueueScope(): QueueScope {
  const scope = useScope();
  const database = usePostgres();
  return {
    stores: [fsStore, pgStore(database)],
    async tempDir() {
      const dir = await tempDir();
      scope.defer(() => removeDir(dir));
      return dir;
    },
    async start(o) {
      const server = await startQueueServer(o);
      scope.defer(() => server.close());
      return server;
    },
    defer: (fn) => scope.defer(fn),
  };
}

/** Start a server with rcpt-local, the given plugins and the queue (queue-fs unless told), on a fake clock. */
export async function startQueueServer(o: QueueServerOptions): Promise<QueueServer> {
  const definitions = new Map<string, PluginDefinition>();
  const entries: Array<Record<string, unknown>> = [
    { plugin: 'enhanced-status-codes' },
    { plugin: 'pipelining' },
    { plugin: 'rcpt-local', config: { domains: o.domains ?? ['example.com', 'example.org', 'example.net'] } },
  ];
  for (const p of o.plugins ?? []) {
    if (typeof p === 'string') {
      entries.push({ plugin: p });
      continue;
    }
    if ('register' in p) {
      definitions.set(p.name, p);
      entries.push({ plugin: p.name });
      continue;
    }
    const name = typeof p.plugin === 'string' ? p.plugin : p.plugin.name;
    if (typeof p.plugin !== 'string') definitions.set(name, p.plugin);
    entries.push({ plugin: name, id: p.id, ...(p.config ? { config: p.config } : {}) });
  }
  const store = o.store ?? fsStore;
  entries.push({ plugin: store.name, config: { ...(await store.config(o.dataDir)), ...o.queue } });
  const server = await MailServer.create({
    config: {
      hostname: 'mx.test.example',
      dataDir: o.dataDir,
      listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
      timeouts: { command: 5000, data: 5000, hook: 5000, shutdownGrace: 500 },
      plugins: entries,
    },
    definitions,
    clock: o.clock,
  });
  const [address] = await server.listen();
  const queue = server.registry.service('queue');
  if (!address || !queue) throw new Error('server did not start a queue');
  return { server, port: address.port, queue, close: () => server.close(200) };
}

export interface Outgoing {
  readonly from: string;
  readonly to: readonly string[];
  readonly body?: string;
  /** Extra MAIL FROM parameters, e.g. `RET=FULL ENVID=abc`. */
  readonly mailParams?: string;
  /** Extra RCPT TO parameters per recipient (by index). */
  readonly rcptParams?: readonly (string | undefined)[];
}

/** Send one message; returns the queue id from the 250 reply. */
export async function sendMail(port: number, m: Outgoing): Promise<string> {
  const c = await connectClient(port);
  try {
    await c.expect('EHLO client.test', 250);
    await c.expect(`MAIL FROM:<${m.from}>${m.mailParams ? ` ${m.mailParams}` : ''}`, 250);
    for (const [i, to] of m.to.entries()) {
      const p = m.rcptParams?.[i];
      await c.expect(`RCPT TO:<${to}>${p ? ` ${p}` : ''}`, 250);
    }
    await c.expect('DATA', 354);
    const r = await c.sendData(
      m.body ??
        `From: <${m.from}>\r\nTo: <${m.to[0]}>\r\nSubject: test\r\nMessage-ID: <t@test>\r\n\r\nHello.\r\n`,
    );
    if (r.code !== 250) throw new Error(`DATA: ${r.raw}`);
    const id = /queued as (\S+)/.exec(r.lines.join(' '))?.[1];
    if (!id) throw new Error(`no queue id in ${r.raw}`);
    await c.command('QUIT');
    return id;
  } finally {
    await c.close();
  }
}

/** Split a MIME multipart body by its boundary (from the Content-Type header). */
export function parseMultipart(message: string): {
  headers: string;
  parts: Array<{ headers: string; body: string }>;
} {
  const split = message.indexOf('\r\n\r\n');
  const headers = message.slice(0, split);
  const unfolded = headers.replace(/\r\n[ \t]+/g, ' ');
  const boundary = /boundary="([^"]+)"/i.exec(unfolded)?.[1];
  if (!boundary) throw new Error('no boundary');
  const body = message.slice(split + 4);
  // RFC 2046 5.1.1: a delimiter is CRLF "--" boundary; the CRLF is not part of the body before it.
  const pieces = `\r\n${body}`.split(`\r\n--${boundary}`);
  const last = pieces.pop();
  if (last !== '--\r\n') throw new Error(`bad close delimiter: ${JSON.stringify(last)}`);
  const parts = pieces.slice(1).map((p) => {
    if (!p.startsWith('\r\n')) throw new Error('delimiter line not followed by CRLF');
    const s = p.slice(2);
    const i = s.indexOf('\r\n\r\n');
    return { headers: s.slice(0, i), body: s.slice(i + 4) };
  });
  return { headers, parts };
}

/** Parse `Name: value` groups separated by blank lines (message/delivery-status). */
export function parseFieldGroups(text: string): Array<Map<string, string>> {
  return text
    .replace(/\r\n[ \t]+/g, ' ')
    .split(/\r\n\r\n/)
    .filter((g) => g.trim() !== '')
    .map((g) => {
      const m = new Map<string, string>();
      for (const line of g.split('\r\n')) {
        const i = line.indexOf(':');
        if (i > 0) m.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim());
      }
      return m;
    });
}

/** What `mailframe queue ...` printed and its exit code. */
export interface CliRun {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** Run `mailframe queue ARGV` in this process against the config file `config`. */
export async function queueCli(config: string, ...argv: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const code = await runQueueCli(argv, config, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

/** `mailframe queue ARGV --json`, which must succeed: its parsed output. */
export async function queueCliJson<T>(config: string, ...argv: string[]): Promise<T> {
  const r = await queueCli(config, ...argv, '--json');
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out) as T;
}

/**
 * A queue server (`plugins`, then a scripted delivery plugin, then the queue:
 * `store`, default queue-fs) and a config file pointing the CLI at its queue.
 * `defer`: deliveries answer 451 until the test says otherwise.
 */
export async function startForCli(
  scope: QueueScope,
  o: { plugins?: QueueServerOptions['plugins']; defer?: boolean; store?: QueueStoreKind } = {},
) {
  const clock = new FakeClock();
  const dir = await scope.tempDir();
  const dataDir = join(dir, 'data');
  const config = join(dir, 'mailframe.json');
  const store = o.store ?? fsStore;
  const queueConfig = store.name === 'queue-fs' ? {} : await store.config(dataDir);
  await writeFile(
    config,
    JSON.stringify({ dataDir: './data', plugins: [{ plugin: store.name, config: queueConfig }] }),
  );
  const d = new Deliverer(clock);
  if (o.defer) d.behaviour = () => ({ code: 451, enhanced: '4.3.0', text: 'not now' });
  const s = await scope.start({ store, clock, dataDir, plugins: [...(o.plugins ?? []), d.plugin] });
  return { clock, dataDir, config, d, s };
}
