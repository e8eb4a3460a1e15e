/**
 * Plugin faults under `mailframe start`, in a child process: the honest check
 * that the process does not exit. A fault a plugin leaves behind is logged and
 * counted and the server keeps serving; an uncaught exception no plugin owns
 * stops the listener, lets the session in DATA finish, and the process exits
 * non-zero for its supervisor to restart (docs/operations.md, "Faults").
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { connectClient, type SmtpClient } from '../../core/testkit.ts';
import { FAULT_KINDS } from '../fixtures/faulty-plugin.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FAULTY = join(ROOT, 'test/fixtures/faulty-plugin.ts');
/** `mailframe start`, or the same with a fault planted outside any plugin (SIGUSR2). */
const BIN = join(ROOT, 'bin/mailframe.js');
const WITH_CORE_FAULT = join(ROOT, 'test/fixtures/start-with-core-fault.ts');

interface LogLine {
  level: number;
  msg: string;
  plugin?: string;
  hook?: string;
  fault?: string;
  address?: { port: number };
  hooks?: Array<{ plugin: string; hook: string; faults: number }>;
  err?: { message?: string };
}

interface Running {
  readonly child: ChildProcess;
  readonly lines: LogLine[];
  readonly stderr: () => string;
  readonly port: number;
  readonly exited: Promise<number | null>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** Wait (bounded) until `check` holds. */
async function until(check: () => boolean, what: string, r?: Running): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (check()) return;
    await new Promise((ok) => setTimeout(ok, 10));
  }
  throw new Error(`still waiting for ${what}${r ? `; stderr: ${r.stderr()}` : ''}`);
}

async function startCli(entry: string): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-faults-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'mailframe.json');
  await writeFile(
    file,
    JSON.stringify({
      hostname: 'mx.test.example',
      dataDir: './var',
      log: { level: 'info', pretty: false },
      listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
      timeouts: { shutdownGrace: 10000 },
      plugins: [
        { plugin: 'enhanced-status-codes' },
        { plugin: 'pipelining' },
        { plugin: FAULTY },
        { plugin: 'rcpt-local', config: { domains: ['example.com'] } },
        { plugin: 'queue-discard' },
      ],
    }),
  );
  const child = spawn(join(ROOT, 'node_modules/.bin/node'), [entry, 'start', '-c', file], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const lines: LogLine[] = [];
  let partial = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    const parts = (partial + s).split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) if (l.startsWith('{')) lines.push(JSON.parse(l) as LogLine);
  });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s;
  });
  const running = { child, lines, stderr: () => err, exited, port: 0 };
  await until(
    () => lines.some((l) => l.msg === 'listening') || child.exitCode !== null,
    'listening',
    running,
  );
  const port = lines.find((l) => l.msg === 'listening')?.address?.port;
  if (port === undefined) throw new Error(`the server did not start: ${err}`);
  return { ...running, port };
}

async function openTransaction(port: number, helo: string): Promise<SmtpClient> {
  const c = await connectClient(port);
  cleanups.push(() => c.close());
  await c.expect(`EHLO ${helo}`, 250);
  await c.expect('MAIL FROM:<a@b.example>', 250);
  await c.expect('RCPT TO:<bob@example.com>', 250);
  return c;
}

describe('mailframe start with a faulty plugin', () => {
  it('survives every fault kind, logs and counts each, and keeps serving', async () => {
    const r = await startCli(BIN);
    const other = await openTransaction(r.port, 'other.example');
    const c = await openTransaction(r.port, 'client.example');
    for (const kind of FAULT_KINDS) await c.expect(`RCPT TO:<${kind}@example.com>`, 250);
    const faults = () => r.lines.filter((l) => l.msg.startsWith('plugin fault'));
    await until(() => faults().length === FAULT_KINDS.length, 'a log line per fault', r);
    expect(
      faults()
        .map((l) => [l.level, l.plugin, l.hook, l.err?.message])
        .sort(),
    ).toEqual(FAULT_KINDS.map((k) => [50, 'faulty', 'rcpt', `planted ${k} fault`]).sort());
    for (const s of [other, c]) {
      await s.expect('DATA', 354);
      const done = await s.sendData('Subject: still here\r\n\r\nbody\r\n');
      expect(done.code).toBe(250);
    }
    const fresh = await connectClient(r.port);
    cleanups.push(() => fresh.close());
    await fresh.expect('EHLO fresh.example', 250);
    await fresh.expect('QUIT', 221);
    expect(r.child.exitCode).toBeNull();
    // A clean stop: exit 0, and the closing summary carries the counters.
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
    const summary = r.lines.find((l) => l.hooks !== undefined);
    expect(summary?.hooks?.find((h) => h.plugin === 'faulty' && h.hook === 'rcpt')).toMatchObject({
      faults: FAULT_KINDS.length,
    });
    expect(r.stderr()).not.toContain('planted');
  });

  it('on an exception no plugin owns: logs fatal, stops accepting, finishes the message in DATA, exits 1', async () => {
    const r = await startCli(WITH_CORE_FAULT);
    const c = await openTransaction(r.port, 'client.example');
    await c.expect('DATA', 354);
    c.send('Subject: in flight\r\n\r\nfirst half\r\n');
    r.child.kill('SIGUSR2');
    await until(() => r.lines.some((l) => l.level === 60), 'the fatal line', r);
    expect(r.lines.find((l) => l.level === 60)).toMatchObject({
      fault: 'uncaughtException',
      err: { message: 'planted core fault' },
    });
    await expect(connectClient(r.port)).rejects.toThrow(/ECONNREFUSED/);
    c.send('second half\r\n.\r\n');
    const done = await c.read();
    expect(done.code).toBe(250);
    const bye = await c.read();
    expect([bye.code, bye.enhanced]).toEqual([421, '4.3.2']);
    expect(await r.exited).toBe(1);
    expect(r.stderr()).toContain('planted core fault');
  });
});
