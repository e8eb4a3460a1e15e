import { mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../core/log.ts';
import type { EnvelopeInput, Lease } from '../queue/types.ts';
import { scanRecords } from './journal-record.ts';
import { FsQueueStore } from './store.ts';

let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

interface StoreOpts {
  memoryCache?: number;
  journal?: boolean;
  journalSegmentSize?: number;
  root?: string;
}

async function openStore(opts: StoreOpts = {}): Promise<{ store: FsQueueStore; root: string }> {
  const root = opts.root ?? (await mkdtemp(join(tmpdir(), 'mf-store-')));
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
    const { store, root } = await openStore({ journal: false });
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
    const { store, root } = await openStore({ memoryCache: 2500, journal: false });
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

describe('FsQueueStore journal', () => {
  const bodyOf = async (lease: Lease) => readStream(lease.stream());
  const segments = async (root: string) => (await readdir(join(root, 'journal'))).sort();

  it('puts concurrent messages in one segment, no file each, and leaves nothing once delivered', async () => {
    const { store, root } = await openStore();
    const bodies = Array.from({ length: 40 }, (_, n) => message(n, 1200));
    const ids = await Promise.all(bodies.map((b, n) => store.enqueue(envelope(n), b)));
    expect(new Set(ids).size).toBe(40);
    expect(await readdir(join(root, 'messages'))).toEqual([]);
    expect(await segments(root)).toEqual(['000000000001.jnl']);
    const leases = await store.leaseDue(Date.now(), 100);
    expect(leases).toHaveLength(40);
    for (const lease of leases) {
      const n = ids.indexOf(lease.id);
      expect((await bodyOf(lease)).equals(bodies[n] as Buffer)).toBe(true);
      await store.settle(lease, delivered(lease), Date.now());
    }
    await store.close();
    expect(await segments(root)).toEqual([]);
    expect(await readdir(join(root, 'messages'))).toEqual([]);
  });

  it('gives back, after a restart, every message not released, read from the segment', async () => {
    const first = await openStore({ memoryCache: 0 });
    const bodies = [0, 1, 2, 3].map((n) => message(n, 900 + n));
    const ids: string[] = [];
    for (const [n, b] of bodies.entries()) ids.push(await first.store.enqueue(envelope(n), b));
    const leases = await first.store.leaseDue(Date.now(), 10);
    const lease0 = leases.find((l) => l.id === ids[0]) as Lease;
    await first.store.settle(lease0, delivered(lease0), Date.now());
    expect(await first.store.delete(ids[1] as string)).toBe(true);
    await first.store.close();

    const second = await openStore({ root: first.root });
    expect((await second.store.list()).map((m) => m.id).sort()).toEqual([ids[2], ids[3]].sort());
    for (const lease of await second.store.leaseDue(Date.now(), 10)) {
      expect((await bodyOf(lease)).equals(bodies[ids.indexOf(lease.id)] as Buffer)).toBe(true);
    }
  });

  it('moves a deferred message to a queue file with its state, and the file wins after a restart', async () => {
    const first = await openStore();
    const body = message(7, 1000);
    const id = await first.store.enqueue(envelope(7), body);
    const [lease] = await first.store.leaseDue(Date.now(), 10);
    const now = Date.now();
    await first.store.settle(
      lease as Lease,
      [{ index: 0, status: 'deferred', nextAttemptAt: now, reply: { code: 451, text: 'later' } }],
      now,
    );
    const file = await readFile(join(first.root, 'messages', id));
    expect(file.subarray(file.length - body.length).equals(body)).toBe(true);
    expect(JSON.parse(await readFile(join(first.root, 'state', id), 'utf8')).recipients[0].attempts).toBe(1);
    await first.store.close();
    expect(await segments(first.root)).toEqual([]);

    const second = await openStore({ root: first.root });
    const [summary] = await second.store.list();
    expect(summary).toMatchObject({ id, attempts: 1 });
    const [again] = await second.store.leaseDue(Date.now() + 1, 10);
    expect((await bodyOf(again as Lease)).equals(body)).toBe(true);
  });

  it('keeps the whole records before a torn one and sets a copy of the segment aside', async () => {
    const first = await openStore();
    const ids = [
      await first.store.enqueue(envelope(0), message(0, 700)),
      await first.store.enqueue(envelope(1), message(1, 700)),
    ];
    await first.store.close();
    const [name] = await segments(first.root);
    const path = join(first.root, 'journal', name as string);
    // A torn write over the zero-filled segment: the second record's last 100 octets never landed.
    const buf = await readFile(path);
    const end = scanRecords(buf).validEnd;
    buf.fill(0, end - 100, end);
    await writeFile(path, buf);

    const second = await openStore({ root: first.root });
    expect((await second.store.list()).map((m) => m.id)).toEqual([ids[0]]);
    expect((await readdir(join(first.root, 'corrupt'))).some((f) => f.startsWith(name as string))).toBe(true);
  });

  it('rolls segments over, deletes them oldest first, and moves out a message that holds old ones back', async () => {
    const { store, root } = await openStore({ journalSegmentSize: 4096 });
    const ids: string[] = [];
    for (let n = 0; n < 16; n++) ids.push(await store.enqueue(envelope(n), message(n, 1500)));
    expect((await segments(root)).length).toBeGreaterThan(4);
    // Deliver all but the first message: its segment (the oldest) keeps every newer one on disk...
    for (const lease of await store.leaseDue(Date.now(), 100)) {
      if (lease.id !== ids[0]) await store.settle(lease, delivered(lease), Date.now());
    }
    // ...until the journal has the store move it to a queue file of its own.
    await vi.waitFor(async () => {
      expect(await readdir(join(root, 'messages'))).toEqual([ids[0]]);
      expect((await segments(root)).length).toBeLessThanOrEqual(1);
    });
    expect((await store.list()).map((m) => m.id)).toEqual([ids[0]]);
  });

  it('with the journal off, writes a queue file per message', async () => {
    const { store, root } = await openStore({ journal: false });
    const id = await store.enqueue(envelope(0), message(0, 500));
    expect(await readdir(join(root, 'messages'))).toEqual([id]);
    expect(await readdir(join(root, 'journal')).catch(() => [])).toEqual([]);
  });
});
