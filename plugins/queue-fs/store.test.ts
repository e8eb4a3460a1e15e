import { mkdtemp, readdir, readFile, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../core/log.ts';
import type { EnvelopeInput, Lease } from '../queue/types.ts';
import { FsQueueStore } from './store.ts';

let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

async function openStore(
  opts: { memoryCache?: number } = {},
): Promise<{ store: FsQueueStore; root: string }> {
  const root = await mkdtemp(join(tmpdir(), 'mf-store-'));
  const store = await FsQueueStore.open({
    root,
    fsync: true,
    clock: { now: () => Date.now() },
    log: silentLogger(),
    ...opts,
  });
  // Closing twice is harmless: tests that close early are closed again here.
  cleanup.push(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });
  await store.ready;
  return { store, root };
}

function envelope(n: number): EnvelopeInput {
  return {
    from: 'alice@example.net',
    recipients: [{ address: `bob${n}@example.com`, domain: 'example.com', attributes: {} }],
    attributes: {},
    receivedAt: Date.now(),
  };
}

/** A message of `size` octets in a buffer of its own (not a slice of Node's shared pool). */
function message(n: number, size: number): Buffer {
  const head = `Subject: message ${n}\r\n\r\n`;
  const b = Buffer.alloc(size, 'x');
  b.write(head, 0, 'latin1');
  b.write('\r\n', size - 2, 'latin1');
  return b;
}

async function readStream(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const delivered = (lease: Lease) =>
  lease.recipients.map((r) => ({
    index: r.index,
    status: 'delivered' as const,
    reply: { code: 250, text: 'OK' },
  }));

describe('FsQueueStore (fsync on)', () => {
  it('writes each queue file in full, then removes it and leaves no file behind once delivered', async () => {
    const { store, root } = await openStore();
    const bodies = [0, 1, 2, 3].map((n) => message(n, 1500));
    const ids = await Promise.all(bodies.map((b, n) => store.enqueue(envelope(n), b)));
    for (const [n, id] of ids.entries()) {
      const file = await readFile(join(root, 'messages', id));
      expect(file.subarray(file.length - 1500).equals(bodies[n] as Buffer)).toBe(true);
      expect(file.toString('latin1')).toMatch(new RegExp(`^MAILFRAME-QUEUE 1\n\\{"id":"${id}"`));
    }
    const leases = await store.leaseDue(Date.now(), 10);
    expect(leases.map((l) => l.id).sort()).toEqual([...ids].sort());
    for (const lease of leases) await store.settle(lease, delivered(lease), Date.now());
    await store.close();
    expect(await readdir(join(root, 'messages'))).toEqual([]);
    expect(await readdir(join(root, 'state'))).toEqual([]);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('serves the first attempt of a small message from memory, within the memory bound', async () => {
    // Room for two 1,000-octet messages: the third is read from its file.
    const { store, root } = await openStore({ memoryCache: 2500 });
    const bodies = [0, 1, 2].map((n) => message(n, 1000));
    const ids: string[] = [];
    for (const [n, b] of bodies.entries()) ids.push(await store.enqueue(envelope(n), b));
    // Take the files away behind the store's back: only what it keeps in memory can still be read.
    for (const id of ids) await unlink(join(root, 'messages', id));
    const leases = await store.leaseDue(Date.now(), 10);
    const byId = new Map(leases.map((l) => [l.id, l]));
    expect(
      (await readStream((byId.get(ids[0] as string) as Lease).stream())).equals(bodies[0] as Buffer),
    ).toBe(true);
    expect(
      (await readStream((byId.get(ids[1] as string) as Lease).stream())).equals(bodies[1] as Buffer),
    ).toBe(true);
    await expect(readStream((byId.get(ids[2] as string) as Lease).stream())).rejects.toThrow(/ENOENT/);
  });

  it('drops the body from memory when the attempt is deferred', async () => {
    const { store, root } = await openStore();
    const body = message(0, 800);
    const id = await store.enqueue(envelope(0), body);
    const [lease] = await store.leaseDue(Date.now(), 10);
    expect(lease?.id).toBe(id);
    const now = Date.now();
    await store.settle(
      lease as Lease,
      [{ index: 0, status: 'deferred', nextAttemptAt: now, reply: { code: 451, text: 'later' } }],
      now,
    );
    expect(JSON.parse(await readFile(join(root, 'state', id), 'utf8')).recipients[0].attempts).toBe(1);
    await unlink(join(root, 'messages', id));
    const [again] = await store.leaseDue(Date.now() + 1, 10);
    await expect(readStream((again as Lease).stream())).rejects.toThrow(/ENOENT/);
  });
});
