import { copyFile, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { Deliverer, FakeClock, MINUTE, sendMail, startQueueServer, useQueueScope } from './queue-harness.ts';

const scope = useQueueScope();

const deferAll = () => ({ code: 451, enhanced: '4.3.0', text: 'try later' });

// The queue's behaviour, proved the same way for every backend.
describe.each(scope.stores)('queue on $name', (store) => {
  it('offers a queued message to the delivery plugin and removes it once delivered', async () => {
    const clock = new FakeClock();
    const d = new Deliverer(clock);
    const dataDir = await scope.tempDir();
    const s = await scope.start({ store, clock, dataDir, plugins: [d.plugin] });
    const id = await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    await s.queue.runDue();
    expect(d.seen).toHaveLength(1);
    const [seen] = d.seen;
    expect(seen?.job.id).toBe(id);
    expect(seen?.job.destination).toBe('example.com');
    expect(seen?.job.route).toBeUndefined();
    expect(seen?.job.from).toBe('alice@example.net');
    expect(seen?.recipients).toEqual(['bob@example.com']);
    expect(seen?.message).toMatch(/^Received: from client\.test/);
    expect(seen?.message.endsWith('Subject: test\r\nMessage-ID: <t@test>\r\n\r\nHello.\r\n')).toBe(true);
    expect(await s.queue.list()).toEqual([]);
    if (store.name === 'queue-fs') {
      expect(await readdir(join(dataDir, 'queue', 'messages'))).toEqual([]);
      expect(await readdir(join(dataDir, 'queue', 'state'))).toEqual([]);
    }
  });

  it('keeps queued messages across a restart and delivers them afterwards', async () => {
    const clock = new FakeClock();
    const dataDir = await scope.tempDir();
    const first = new Deliverer(clock);
    first.behaviour = deferAll;
    const s1 = await scope.start({ store, clock, dataDir, plugins: [first.plugin] });
    const sent = new Map<string, string>();
    for (let i = 0; i < 5; i++) {
      const body = `Subject: n${i}\r\n\r\nmessage number ${i}\r\n.leading dot\r\n`;
      sent.set(await sendMail(s1.port, { from: 'alice@example.net', to: [`u${i}@example.com`], body }), body);
    }
    await s1.queue.runDue();
    expect(first.seen).toHaveLength(5);
    await s1.close();

    const second = new Deliverer(clock);
    const s2 = await scope.start({ store, clock, dataDir, plugins: [second.plugin] });
    expect((await s2.queue.list()).map((m) => m.id).sort()).toEqual([...sent.keys()].sort());
    await s2.queue.runDue();
    expect(second.seen).toHaveLength(0); // not due yet: the first retry is 5 minutes out
    clock.advance(5 * MINUTE);
    await s2.queue.runDue();
    expect(second.seen).toHaveLength(5);
    for (const seen of second.seen) {
      expect(seen.job.attempts).toBe(1);
      expect(seen.message.endsWith(sent.get(seen.job.id) as string)).toBe(true);
    }
    expect(await s2.queue.list()).toEqual([]);
  });

  it('records results per recipient: a delivered recipient is not tried again', async () => {
    const clock = new FakeClock();
    const d = new Deliverer(clock);
    d.behaviour = (job) => ({
      results: job.recipients.map((r) =>
        r.address.startsWith('ok')
          ? { recipient: r.address, status: 'delivered' as const }
          : { recipient: r.address, status: 'deferred' as const, reply: deferAll() },
      ),
    });
    const s = await scope.start({ store, clock, dataDir: await scope.tempDir(), plugins: [d.plugin] });
    const id = await sendMail(s.port, {
      from: 'alice@example.net',
      to: ['ok1@example.com', 'later@example.com', 'ok2@example.com'],
    });
    await s.queue.runDue();
    expect(d.seen.map((x) => x.recipients)).toEqual([
      ['ok1@example.com', 'later@example.com', 'ok2@example.com'],
    ]);
    const detail = await s.queue.show(id);
    expect(detail?.recipientStates.map((r) => r.status)).toEqual(['delivered', 'pending', 'delivered']);
    expect(detail?.state).toBe('deferred');
    expect(detail?.lastReply).toEqual({ code: 451, enhanced: '4.3.0', text: 'try later' });
    clock.advance(5 * MINUTE);
    await s.queue.runDue();
    expect(d.seen.map((x) => x.recipients)).toEqual([
      ['ok1@example.com', 'later@example.com', 'ok2@example.com'],
      ['later@example.com'],
    ]);
  });

  it('splits jobs per destination and routes them by the routing table', async () => {
    const clock = new FakeClock();
    const local = new Deliverer(clock, { name: 'local', onlyRoute: true });
    const relay = new Deliverer(clock, { name: 'relay', onlyRoute: true });
    const any = new Deliverer(clock, { name: 'any' });
    const s = await scope.start({
      store,
      clock,
      dataDir: await scope.tempDir(),
      domains: ['example.com', 'sub.example.org', 'example.org', 'example.net'],
      plugins: [local.plugin, relay.plugin, any.plugin],
      queue: {
        routes: [
          { domains: ['EXAMPLE.com'], via: 'local' },
          { domains: ['*.example.org'], via: 'relay' },
        ],
      },
    });
    const id = await sendMail(s.port, {
      from: 'alice@example.net',
      to: ['a@example.com', 'b@sub.example.org', 'c@example.com', 'd@example.org', 'e@Example.NET'],
    });
    await s.queue.runDue();
    expect(local.seen.map((x) => [x.job.id, x.job.destination, x.job.route, x.recipients])).toEqual([
      [id, 'example.com', 'local', ['a@example.com', 'c@example.com']],
    ]);
    expect(relay.seen.map((x) => [x.job.destination, x.job.route, x.recipients])).toEqual([
      ['sub.example.org', 'relay', ['b@sub.example.org']],
    ]);
    // No rule matched: no route, so the catch-all plugin (it claims anything) got them.
    expect(
      any.seen
        .map((x) => [x.job.destination, x.job.route, x.recipients])
        .sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
    ).toEqual([
      ['example.net', undefined, ['e@Example.NET']],
      ['example.org', undefined, ['d@example.org']],
    ]);
  });

  it('hands jobs to a real delivery plugin (deliver-maildir) by route', async () => {
    const clock = new FakeClock();
    const dataDir = await scope.tempDir();
    const root = join(dataDir, 'mail');
    const s = await scope.start({
      store,
      clock,
      dataDir,
      plugins: [{ plugin: 'deliver-maildir', id: 'local', config: { root } }],
      queue: { routes: [{ domains: ['example.com'], via: 'local' }] },
    });
    await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    await s.queue.runDue();
    const dirNew = join(root, 'example.com', 'bob', 'Maildir', 'new');
    const [file] = await readdir(dirNew);
    const stored = await readFile(join(dirNew, file as string), 'utf8');
    expect(stored).toMatch(/^Return-Path: <alice@example\.net>\nDelivered-To: bob@example\.com\nReceived: /);
    expect(stored.endsWith('Subject: test\nMessage-ID: <t@test>\n\nHello.\n')).toBe(true);
    expect(await s.queue.list()).toEqual([]);
  });

  it('defers a job nobody claims, and delivers it once a retry finds a claimant', async () => {
    const clock = new FakeClock();
    const d = new Deliverer(clock, { name: 'picky', onlyRoute: true });
    const s = await scope.start({ store, clock, dataDir: await scope.tempDir(), plugins: [d.plugin] });
    const id = await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    await s.queue.runDue();
    const detail = await s.queue.show(id);
    expect(detail?.state).toBe('deferred');
    expect(detail?.lastReply).toMatchObject({ code: 451, enhanced: '4.4.0' });
  });

  it('keeps per-destination and overall concurrency within limits', async () => {
    const clock = new FakeClock();
    const d = new Deliverer(clock);
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let running = 0;
    let most = 0;
    const perDomain = new Map<string, number>();
    let mostPerDomain = 0;
    d.behaviour = async (job) => {
      running++;
      most = Math.max(most, running);
      const n = (perDomain.get(job.destination) ?? 0) + 1;
      perDomain.set(job.destination, n);
      mostPerDomain = Math.max(mostPerDomain, n);
      await gate;
      perDomain.set(job.destination, (perDomain.get(job.destination) ?? 1) - 1);
      running--;
      return { code: 250, enhanced: '2.0.0', text: 'OK' };
    };
    const s = await scope.start({
      store,
      clock,
      dataDir: await scope.tempDir(),
      plugins: [d.plugin],
      queue: { concurrency: 3, perDestination: 2 },
    });
    for (let i = 0; i < 4; i++) await sendMail(s.port, { from: 'a@example.net', to: [`x${i}@example.com`] });
    for (let i = 0; i < 4; i++) await sendMail(s.port, { from: 'a@example.net', to: [`y${i}@example.org`] });
    // Every delivery blocks until the gate opens: the scheduler fills exactly its limits
    // (queue-pg leases through the database, so it may get there a little after the last 250).
    await vi.waitFor(() => expect(running).toBe(3), { timeout: 10_000 });
    expect([...perDomain.values()].sort()).toEqual([1, 2]);
    // queue-pg counts the jobs a node has leased: those running and those it holds in memory
    // to start next (leased with the statement that stored them), at most one per message here.
    const active = (await s.queue.stats()).active;
    if (store.name === 'queue-pg') expect(active).toBeGreaterThanOrEqual(3);
    else expect(active).toBe(3);
    open();
    await s.queue.runDue();
    expect(d.seen).toHaveLength(8);
    expect(most).toBe(3);
    expect(mostPerDomain).toBe(2);
    expect(await s.queue.list()).toEqual([]);
  });
});

describe('queue-fs', () => {
  it('sets aside corrupt queue files and cleans tmp leftovers at start', async () => {
    const clock = new FakeClock();
    const dataDir = await scope.tempDir();
    const holdAll = new Deliverer(clock);
    holdAll.behaviour = deferAll;
    const s1 = await scope.start({ clock, dataDir, plugins: [holdAll.plugin] });
    const good = await sendMail(s1.port, { from: 'a@example.net', to: ['b@example.com'] });
    await s1.close();
    const q = join(dataDir, 'queue');
    const original = await readFile(join(q, 'messages', good));
    // A truncated copy, garbage, and a half-written file in tmp/.
    const truncated = `${good.slice(0, -1)}x`;
    await writeFile(join(q, 'messages', truncated), original.subarray(0, original.length - 3));
    await writeFile(join(q, 'messages', 'zzzzzzzzzzzzzzzzzzz'), 'not a queue file\n');
    await copyFile(join(q, 'messages', good), join(q, 'tmp', 'half.msg'));
    const d = new Deliverer(clock);
    const s2 = await scope.start({ clock, dataDir, plugins: [d.plugin] });
    expect((await s2.queue.list()).map((m) => m.id)).toEqual([good]);
    expect(await readdir(join(q, 'tmp'))).toEqual([]);
    expect((await readdir(join(q, 'corrupt'))).length).toBe(2);
    clock.advance(10 * MINUTE);
    await s2.queue.runDue();
    expect(d.seen.map((x) => x.job.id)).toEqual([good]);
  });

  it('refuses to start a second server on a queue whose control socket answers', async () => {
    const clock = new FakeClock();
    const dataDir = await scope.tempDir();
    await scope.start({ clock, dataDir });
    await expect(startQueueServer({ clock, dataDir })).rejects.toThrow(/another server is using this queue/);
  });
});
