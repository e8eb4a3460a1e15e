/**
 * The servers under test, each started as its own child process on a free
 * loopback port, so its CPU time and memory can be read from /proc by pid:
 *
 * - `mailframe-discard`: mailframe with queue-discard (the protocol path);
 * - `mailframe-fs`: mailframe with the durable file queue (fsync on);
 * - `smtp-server`: nodemailer's smtp-server accepting and discarding;
 * - `smtp-sink`: Postfix's smtp-sink, when installed.
 *
 * Each is exec'd through bash only to raise its open-file limit, so the pid
 * is the server itself (no wrapper process in between).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SmtpConn } from './smtp-conn.ts';

export const SERVER_NAMES = ['mailframe-discard', 'mailframe-fs', 'smtp-server', 'smtp-sink'] as const;
export type ServerName = (typeof SERVER_NAMES)[number];

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const HOST = '127.0.0.1';

/** A child process serving SMTP on `host:port`, exec'd directly (its pid is the server's). */
export interface RunningProcess<N extends string = string> {
  readonly name: N;
  readonly pid: number;
  readonly host: string;
  readonly port: number;
  /** The last few KB the process printed (for error reports). */
  output(): string;
  /** SIGTERM, then SIGKILL after a grace period; removes its temporary files. */
  stop(): Promise<void>;
}

export type RunningServer = RunningProcess<ServerName>;

export interface ServerSpec {
  readonly name: ServerName;
  readonly description: string;
  /** Why it cannot run here (e.g. not installed), or undefined when it can. */
  unavailable(): string | undefined;
  start(): Promise<RunningServer>;
}

/** Node 24 from the `node` devDependency when present, else the running one. */
export function nodeBinary(): string {
  const local = join(ROOT, 'node_modules', '.bin', 'node');
  return existsSync(local) ? local : process.execPath;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** A program on PATH or in one of `extra` directories. */
export function findProgram(
  name: string,
  extra: readonly string[] = ['/usr/sbin', '/usr/lib/postfix'],
): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...extra];
  for (const d of dirs) {
    const p = join(d, name);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

export interface Launch<N extends string> {
  readonly name: N;
  readonly command: string;
  readonly args: readonly string[];
  /** Where it answers SMTP when ready (default 127.0.0.1). */
  readonly host?: string;
  readonly port: number;
  readonly cleanup?: () => Promise<void>;
}

async function waitReady(
  child: ChildProcess,
  host: string,
  port: number,
  output: () => string,
  timeoutMs = 30_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited (${child.exitCode ?? child.signalCode}) before listening:\n${output()}`);
    }
    try {
      const { conn, greeting } = await SmtpConn.open(host, port, 2000);
      await conn.quit().catch(() => {});
      if (greeting === 220) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > until)
      throw new Error(`not answering on ${host}:${port} after ${timeoutMs} ms:\n${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Start `l.command` (open-file limit raised), wait until it greets on its port. */
export async function launch<N extends string>(l: Launch<N>): Promise<RunningProcess<N>> {
  const host = l.host ?? HOST;
  // bash only raises the fd limit (W3 holds 10,000 connections), then execs: same pid.
  const child = spawn(
    'bash',
    ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; exec "$@"', 'bench-server', l.command, ...l.args],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-4096);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const output = () => tail;
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      await l.cleanup?.();
    })();
    return stopped;
  };
  try {
    await waitReady(child, host, l.port, output);
  } catch (err) {
    await stop();
    throw new Error(`${l.name}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (child.pid === undefined) throw new Error(`${l.name}: no pid`);
  return { name: l.name, pid: child.pid, host, port: l.port, output, stop };
}

/** What a variant of the mailframe server under test adds (bench/auth.ts: the auth plugins). */
export interface MailframeExtras {
  /** Plugin entries placed before the queue plugin. */
  readonly plugins?: readonly unknown[];
  /** Core settings merged over the bench's top level (e.g. `dns`). */
  readonly core?: Readonly<Record<string, unknown>>;
  /** Options for the server's node before the script (e.g. `--cpu-prof`, bench/auth.ts `--profile`). */
  readonly nodeArgs?: readonly string[];
}

/** Delivery that claims each job and drops it, so a queue drains instead of deferring. */
export const DELIVER_DISCARD = { plugin: join(ROOT, 'bench', 'peers', 'deliver-discard.ts') } as const;

/**
 * The benches' mailframe configuration, written to `dir/mailframe.json` (its
 * path returned): one `mx` listener on `port`, limits out of the way, log
 * level `warn`, ESMTP basics and `example.com` local, then `plugins` (checks,
 * a queue, delivery); `core` merged over the top level (e.g. `dns`).
 */
export async function writeBenchConfig(
  dir: string,
  port: number,
  plugins: readonly unknown[],
  core: Readonly<Record<string, unknown>> = {},
): Promise<string> {
  const config = {
    ...core,
    hostname: 'bench.local',
    dataDir: join(dir, 'data'),
    listeners: [{ name: 'smtp', host: HOST, port, role: 'mx' }],
    limits: { maxConnections: 20_000, maxConnectionsPerIp: 20_000, maxMessageSize: 512 * 1024 * 1024 },
    timeouts: { shutdownGrace: 2000 },
    log: { level: 'warn', pretty: false },
    plugins: [
      { plugin: 'enhanced-status-codes' },
      { plugin: 'pipelining' },
      { plugin: 'rcpt-local', config: { domains: ['example.com'] } },
      ...plugins,
    ],
  };
  const file = join(dir, 'mailframe.json');
  await writeFile(file, JSON.stringify(config, null, 2));
  return file;
}

export async function startMailframe(
  name: ServerName,
  queue: 'discard' | 'fs',
  extras: MailframeExtras = {},
): Promise<RunningServer> {
  const dir = await mkdtemp(join(tmpdir(), `mailframe-bench-${queue}-`));
  const port = await freePort();
  const queuePlugins =
    queue === 'fs'
      ? [{ plugin: 'queue-fs', config: { fsync: true, controlSocket: false } }, DELIVER_DISCARD]
      : [{ plugin: 'queue-discard' }];
  const file = await writeBenchConfig(dir, port, [...(extras.plugins ?? []), ...queuePlugins], extras.core);
  return launch({
    name,
    command: nodeBinary(),
    // Node strips the types itself, as `npm start` does: no loader in the measured process.
    args: [...(extras.nodeArgs ?? []), join(ROOT, 'bin', 'mailframe.ts'), 'start', '-c', file],
    port,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  });
}

async function startSmtpServer(): Promise<RunningServer> {
  const port = await freePort();
  return launch({
    name: 'smtp-server',
    command: nodeBinary(),
    args: [join(ROOT, 'bench', 'peers', 'smtp-server-sink.ts'), '--host', HOST, '--port', String(port)],
    port,
  });
}

export const SMTP_SINK_MISSING =
  'skipped: not installed (apt-get install postfix, or: sudo bash bench/install-peers.sh)';

async function startSmtpSink(): Promise<RunningServer> {
  const bin = findProgram('smtp-sink');
  if (!bin) throw new Error(`smtp-sink: ${SMTP_SINK_MISSING}`);
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  return launch({
    name: 'smtp-sink',
    command: bin,
    // -m: more simultaneous connections than W3 holds (default 256); the last argument is the listen backlog.
    args: [
      '-h',
      'bench.local',
      '-m',
      '20000',
      ...(asRoot ? ['-u', 'nobody'] : []),
      `${HOST}:${port}`,
      '4096',
    ],
    port,
  });
}

export function serverSpec(name: ServerName): ServerSpec {
  switch (name) {
    case 'mailframe-discard':
      return mailframeSpec('discard');
    case 'mailframe-fs':
      return mailframeSpec('fs');
    case 'smtp-server':
      return {
        name,
        description: "nodemailer's smtp-server, accept and discard",
        unavailable: () => undefined,
        start: startSmtpServer,
      };
    case 'smtp-sink':
      return {
        name,
        description: "Postfix's smtp-sink (C, discards)",
        unavailable: () => (findProgram('smtp-sink') ? undefined : SMTP_SINK_MISSING),
        start: startSmtpSink,
      };
  }
}

/**
 * mailframe as `npm run bench` runs it, with `extras` for the feature benches:
 * `mailframe-discard` (queue-discard: the protocol path alone) or
 * `mailframe-fs` (queue-fs with fsync and deliver-discard: durable).
 */
export function mailframeSpec(queue: 'discard' | 'fs', extras: MailframeExtras = {}): ServerSpec {
  const name = queue === 'fs' ? 'mailframe-fs' : 'mailframe-discard';
  return {
    name,
    description:
      queue === 'fs'
        ? 'mailframe, queue-fs with fsync (durable)'
        : 'mailframe, queue-discard (protocol path only)',
    unavailable: () => undefined,
    start: () => startMailframe(name, queue, extras),
  };
}
