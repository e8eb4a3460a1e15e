/**
 * The server under fuzz: mailframe in a child process (so a crash is seen as
 * an exit or a stack trace, not as a dead test runner) with every bundled
 * extension that needs no outside peer, on four loopback listeners (mx with
 * STARTTLS, submission, implicit-TLS submissions, and a PROXY-protocol mx),
 * short timeouts so a stuck session ends quickly, and its state in a
 * temporary directory removed at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../bench/servers.ts';
import { hashPassword } from '../../plugins/auth-users-file/scrypt-hash.ts';
import { healthCheck } from './client.ts';
import { FUZZ_PASSWORD, FUZZ_USER } from './generate.ts';
import { LISTENERS, type ListenerName } from './session.ts';

export const HOST = '127.0.0.1';
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Server timeouts: short, so a session left waiting ends in seconds. */
export const SERVER_TIMEOUTS = { command: 4000, data: 4000 } as const;

export interface FuzzServer {
  readonly pid: number;
  readonly ports: Readonly<Record<ListenerName, number>>;
  /** Why the server must be considered broken (exit, stderr output, error log line), or undefined. */
  fault(): string | undefined;
  /** Resident set size in octets, from /proc (undefined where there is none). */
  rss(): Promise<number | undefined>;
  stop(): Promise<void>;
}

function config(dir: string, ports: Record<ListenerName, number>, usersFile: string): object {
  return {
    hostname: 'fuzz.localhost',
    dataDir: dir,
    listeners: [
      { name: 'mx', host: HOST, port: ports.mx, role: 'mx' },
      { name: 'submission', host: HOST, port: ports.submission, role: 'submission' },
      { name: 'submissions', host: HOST, port: ports.submissions, role: 'submission', implicitTls: true },
      {
        name: 'proxy',
        host: HOST,
        port: ports.proxy,
        role: 'mx',
        proxyProtocol: true,
        trustedProxies: [HOST],
      },
    ],
    limits: { maxConnections: 500, maxConnectionsPerIp: 200, maxMessageSize: 1048576 },
    timeouts: { ...SERVER_TIMEOUTS, shutdownGrace: 2000 },
    log: { level: 'warn', pretty: false },
    plugins: [
      { plugin: 'enhanced-status-codes' },
      { plugin: 'pipelining' },
      { plugin: 'size' },
      { plugin: '8bitmime' },
      { plugin: 'smtputf8' },
      { plugin: 'chunking' },
      { plugin: 'dsn' },
      { plugin: 'tls', config: { selfSigned: true } },
      { plugin: 'requiretls' },
      { plugin: 'auth', config: { mechanisms: ['PLAIN', 'LOGIN'] } },
      { plugin: 'auth-users-file', config: { path: usersFile } },
      { plugin: 'submission' },
      {
        plugin: 'vrfy',
        config: {
          mode: 'lookup',
          mailboxes: ['alice@localhost'],
          expn: 'lookup',
          lists: { 'staff@example.com': ['alice@localhost'] },
        },
      },
      { plugin: 'limits', config: { mailMax: 5 } },
      { plugin: 'xclient' },
      { plugin: 'rcpt-local', config: { domains: ['localhost', 'example.com'] } },
      {
        plugin: 'deliver-maildir',
        config: { root: join(dir, 'mail'), domains: ['localhost', 'example.com'] },
      },
      // No outbound delivery plugin: mail for other domains stays queued (loopback only, nothing leaves).
      { plugin: 'queue-fs', config: { fsync: false } },
    ],
  };
}

/** The Node 24 binary from the `node` devDependency when present, else the running one. */
function nodeBinary(): string {
  const local = join(ROOT, 'node_modules', '.bin', 'node');
  return existsSync(local) ? local : process.execPath;
}

/**
 * Start the fuzz server. Its ports are picked free beforehand, so another
 * process may take one in between (tests run in parallel): a start that
 * fails on a port in use is tried again with new ports, a few times.
 */
export async function startFuzzServer(): Promise<FuzzServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce();
    } catch (err) {
      if (attempt >= 3 || !String((err as Error).message).includes('EADDRINUSE')) throw err;
    }
  }
}

async function startOnce(): Promise<FuzzServer> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-fuzz-'));
  let child: ChildProcess | undefined;
  try {
    const ports = {} as Record<ListenerName, number>;
    for (const name of LISTENERS) ports[name] = await freePort();
    const usersFile = join(dir, 'users.json');
    // Cheap scrypt parameters: AUTH is fuzzed, not benchmarked.
    const hash = await hashPassword(FUZZ_PASSWORD, { N: 1024, r: 8, p: 1 });
    await writeFile(usersFile, JSON.stringify({ users: { [FUZZ_USER]: hash } }));
    const configFile = join(dir, 'mailframe.json');
    await writeFile(configFile, JSON.stringify(config(dir, ports, usersFile), null, 2));

    const proc = spawn(nodeBinary(), [join(ROOT, 'bin', 'mailframe.ts'), 'start', '-c', configFile], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let fault: string | undefined;
    let stopping = false;
    let stderr = '';
    let partial = '';
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.once('exit', (code, signal) => {
      if (!stopping)
        fault ??= `the server exited (${code ?? signal}); stderr: ${stderr.slice(-3000) || '(empty)'}`;
    });
    proc.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-8000);
      fault ??= `the server wrote to stderr (an uncaught error?): ${stderr.slice(0, 3000)}`;
    });
    proc.stdout?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = (lines.pop() ?? '').slice(-10000);
      for (const l of lines) {
        let entry: { level?: number; err?: unknown } = {};
        try {
          entry = JSON.parse(l) as typeof entry;
        } catch {
          entry = {};
        }
        // pino levels: 50 error, 60 fatal. An error line with an exception (`err`) is one the server
        // caught but did not expect; error lines without one report conditions (e.g. no delivery route).
        const level = entry.level ?? 0;
        if (level >= 60 || (level >= 50 && entry.err !== undefined)) {
          fault ??= `the server logged an error: ${l.slice(0, 3000)}`;
        }
      }
    });

    const started = Date.now();
    for (;;) {
      if (fault !== undefined) throw new Error(`fuzz server failed to start: ${fault}`);
      if ((await healthCheck(HOST, ports.mx, 2000)) === undefined) break;
      if (Date.now() - started > 60_000) throw new Error('fuzz server not answering after 60 s');
      await new Promise((r) => setTimeout(r, 200));
    }

    const pid = proc.pid as number;
    let stopped: Promise<void> | undefined;
    return {
      pid,
      ports,
      fault: () => fault,
      async rss() {
        try {
          const status = await readFile(`/proc/${pid}/status`, 'utf8');
          const m = /VmRSS:\s+(\d+) kB/.exec(status);
          return m ? Number(m[1]) * 1024 : undefined;
        } catch {
          return undefined;
        }
      },
      stop() {
        stopped ??= (async () => {
          stopping = true;
          if (proc.exitCode === null && proc.signalCode === null) {
            proc.kill('SIGTERM');
            const timer = setTimeout(() => proc.kill('SIGKILL'), 8000);
            await exited;
            clearTimeout(timer);
          }
          await rm(dir, { recursive: true, force: true });
        })();
        return stopped;
      },
    };
  } catch (err) {
    if (child && child.exitCode === null && child.signalCode === null) {
      const c = child;
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    }
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
