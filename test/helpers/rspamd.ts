/**
 * A real rspamd for the tests (Debian's `rspamd`, installed by the global
 * setup: test/system-packages.ts), started with the project's own minimal
 * config (`test/helpers/rspamd/`): one scanner worker on a free loopback
 * port, no redis, no network lookups, state and logs in a temporary folder.
 * Start one per test file (it takes about a second) and stop it after.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureSystemPackages } from '../system-packages.ts';

const RSPAMD = '/usr/bin/rspamd';
const CONF_DIR = fileURLToPath(new URL('./rspamd/', import.meta.url));
const START_TIMEOUT = 60_000;

export interface RspamdPeer {
  /** The scanner's base URL, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  readonly port: number;
  /** The last lines of rspamd's log (for a failing test's message). */
  logTail(lines?: number): Promise<string>;
  stop(): Promise<void>;
}

/** A loopback TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      s.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

function ping(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(`${url}/ping`, { timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 && body.trim() === 'pong'));
      res.on('error', () => resolve(false));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/** Scan a tiny message; rejects unless rspamd answers with an action. */
function warmUp(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const body = 'From: warm@example.org\r\nSubject: warm-up\r\n\r\nHello.\r\n';
    const req = request(
      `${url}/checkv2`,
      { method: 'POST', timeout: START_TIMEOUT, headers: { IP: '127.0.0.1', 'content-length': body.length } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () =>
          /"action"\s*:/.test(text)
            ? resolve()
            : reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`)),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('warm-up scan timed out')));
    req.end(body);
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Start rspamd and wait until its `/ping` answers; throws with its log when it does not. */
export async function startRspamd(): Promise<RspamdPeer> {
  ensureSystemPackages(['rspamd']);
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-rspamd-'));
  const [port, dnsPort] = [await freePort(), await freePort()];
  const vars: Record<string, string> = {
    LOCAL_CONFDIR: CONF_DIR,
    DBDIR: join(dir, 'db'),
    RUNDIR: join(dir, 'run'),
    LOGDIR: join(dir, 'log'),
    MF_PORT: String(port),
    // Nothing answers there: rspamd's DNS lookups (rDNS of the client, ...) fail at once.
    MF_DNS: `127.0.0.1:${dnsPort}`,
  };
  for (const d of ['db', 'run', 'log']) await mkdir(join(dir, d));
  const url = `http://127.0.0.1:${port}`;
  const logTail = async (lines = 30) => {
    const text = await readFile(join(dir, 'log', 'rspamd.log'), 'utf8').catch(() => '');
    return text.split('\n').slice(-lines).join('\n');
  };
  let output = '';
  // -f: stay in the foreground (we own the process); -i: the tests run as root, and rspamd
  // refuses root workers without it (or -u/-g, which would need the temp folder chowned).
  const child = spawn(
    RSPAMD,
    [
      '-f',
      '-i',
      '-c',
      join(CONF_DIR, 'rspamd.conf'),
      ...Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}=${v}`]),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited(child);
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + START_TIMEOUT;
  while (!(await ping(url))) {
    if (spawnError || child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      const log = await logTail();
      await stop();
      throw new Error(
        `rspamd did not start on ${url}: ${spawnError?.message ?? `exit ${child.exitCode ?? child.signalCode ?? 'none (timed out)'}`}\n${output}\n${log}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // The first scan after start loads what the worker loads lazily (seconds on a busy machine): do it here.
  await warmUp(url).catch(async (err: Error) => {
    const log = await logTail();
    await stop();
    throw new Error(`rspamd started on ${url} but cannot scan: ${err.message}\n${log}`);
  });
  return { url, port, logTail, stop };
}
