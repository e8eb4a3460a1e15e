/**
 * A full spool file system (a real tmpfs, filled up): every message, small
 * (kept in memory, then written) or large (spilled to a spool file while it
 * arrives), gets `452 4.3.1` once its data ends, not a stall until the data
 * timeout. The data timeout here is 5 minutes: a stall times the test out.
 */
import { mkdtemp, readdir, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestServer } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';
import { mountTmpfs } from '../helpers/tmpfs.ts';
import { FakeClock } from './queue-harness.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;
/** Longer than the test may run: a session waiting for data never times out by itself here. */
const LONG = 300_000;

async function fullSpool(plugins: readonly unknown[] = []): Promise<TestServer> {
  const t = await scope.start({
    plugins: [LOCAL, ...(plugins as [])],
    config: { timeouts: { data: LONG, command: LONG } },
  });
  const fs = await mountTmpfs(t.server.spoolDir, 256 * 1024);
  scope.defer(() => fs.unmount()); // runs before the server's own cleanup removes the data directory
  await fs.fill();
  return t;
}

async function openData(t: TestServer): Promise<SmtpClient> {
  const c = await scope.connect(t);
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<a@b.example>', 250);
  await c.expect('RCPT TO:<bob@example.com>', 250);
  return c;
}

function message(octets: number): Buffer {
  const line = `${'x'.repeat(98)}\r\n`;
  return Buffer.from(`Subject: big\r\n\r\n${line.repeat(Math.ceil(octets / line.length))}`);
}

describe('spool file system full', () => {
  it('answers 452 4.3.1 to a message over 256 KiB (spilled to a file) when its data ends', async () => {
    const t = await fullSpool();
    const c = await openData(t);
    await c.expect('DATA', 354);
    c.send(message(1024 * 1024));
    c.send('.\r\n');
    const r = await c.read(LONG);
    expect([r.code, r.enhanced]).toEqual([452, '4.3.1']);
    // The session goes on: the next transaction is answered as usual.
    await c.expect('RSET', 250);
    await c.expect('NOOP', 250);
    expect(t.queued).toHaveLength(0);
    // The partial spool file is gone: only the filler is left.
    expect((await readdir(t.server.spoolDir)).filter((n) => !n.startsWith('filler'))).toEqual([]);
  }, 60_000);

  it('answers 452 4.3.1 to a small message (kept in memory) when the queue cannot store it', async () => {
    const base = await mkdtemp(join(tmpdir(), 'mailframe-full-'));
    scope.defer(() => rm(base, { recursive: true, force: true }));
    const fs = await mountTmpfs(base, 256 * 1024);
    scope.defer(() => fs.unmount());
    const t = await scope.start({
      plugins: [LOCAL, ['queue-fs', { dir: base, controlSocket: false, minFree: 0 }]],
      capture: false,
      config: { timeouts: { data: LONG, command: LONG } },
    });
    await fs.fill();
    const c = await openData(t);
    await c.expect('DATA', 354);
    c.send(message(100 * 1024));
    c.send('.\r\n');
    const r = await c.read(LONG);
    expect([r.code, r.enhanced]).toEqual([452, '4.3.1']);
  }, 60_000);

  it('answers 452 4.3.1 to a BDAT message over 256 KiB', async () => {
    const t = await fullSpool(['chunking']);
    const c = await openData(t);
    const body = message(1024 * 1024);
    const half = Math.floor(body.length / 2);
    c.send(Buffer.concat([Buffer.from(`BDAT ${half}\r\n`), body.subarray(0, half)]));
    const first = await c.read(LONG);
    expect(first.code).toBe(250);
    c.send(Buffer.concat([Buffer.from(`BDAT ${body.length - half} LAST\r\n`), body.subarray(half)]));
    const r = await c.read(LONG);
    expect([r.code, r.enhanced]).toEqual([452, '4.3.1']);
    await c.expect('NOOP', 250);
  }, 60_000);
});

describe('free space reserve (queue-fs minFree)', () => {
  /** A server whose queue lives on a fresh tmpfs of `size` octets. */
  async function queueOnTmpfs(
    size: number,
    queue: Record<string, unknown>,
    plugins: readonly unknown[] = [],
  ) {
    const base = await mkdtemp(join(tmpdir(), 'mailframe-reserve-'));
    scope.defer(() => rm(base, { recursive: true, force: true }));
    const fs = await mountTmpfs(base, size);
    scope.defer(() => fs.unmount());
    return scope.start({
      plugins: [LOCAL, ...(plugins as []), ['queue-fs', { dir: base, controlSocket: false, ...queue }]],
      capture: false,
    });
  }

  it('refuses MAIL with 452 4.3.1 when free space is under the reserve', async () => {
    const t = await queueOnTmpfs(4 * 1024 * 1024, { minFree: 8 * 1024 * 1024 });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 452, '4.3.1');
    // Nothing else changes: the session goes on and may try again later.
    await c.expect('NOOP', 250);
  });

  it('counts a size declared with SIZE= on top of the reserve', async () => {
    const t = await queueOnTmpfs(4 * 1024 * 1024, { minFree: 1024 * 1024 }, ['size']);
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect(`MAIL FROM:<a@b.example> SIZE=${3 * 1024 * 1024 + 512 * 1024}`, 452, '4.3.1');
    await c.expect(`MAIL FROM:<a@b.example> SIZE=${1024 * 1024}`, 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    const r = await c.sendData('Subject: fits\r\n\r\nsmall\r\n');
    expect(r.code).toBe(250);
  });

  it('takes the mail when free space cannot be measured, and warns once per second, not per MAIL', async () => {
    const base = await mkdtemp(join(tmpdir(), 'mailframe-reserve-'));
    scope.defer(() => rm(base, { recursive: true, force: true }));
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const clock = new FakeClock();
    const t = await scope.start({
      plugins: [LOCAL, 'size', ['queue-fs', { dir: base, controlSocket: false, minFree: 1 }]],
      capture: false,
      clock,
      logger: pino({ level: 'info' }, sink),
    });
    const warnings = () => lines.filter((l) => l.includes('cannot measure free space')).length;
    // The queue directory is gone: statfs fails.
    await rename(base, `${base}.away`);
    scope.defer(() => rm(`${base}.away`, { recursive: true, force: true }));
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    for (let i = 0; i < 3; i++) {
      await c.expect('MAIL FROM:<a@b.example> SIZE=1000', 250);
      await c.expect('RSET', 250);
    }
    expect(warnings()).toBe(1);
    // A second later it is measured (and fails) again.
    clock.advance(1000);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RSET', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    expect(warnings()).toBe(2);
    await rename(`${base}.away`, base);
  });
});
