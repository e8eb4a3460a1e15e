/**
 * queue-pg in running servers: nodes sharing one database, and a database
 * that goes away and comes back (through a TCP proxy the test cuts).
 */
import { describe, expect, it } from 'vitest';
import { connectClient } from '../../core/testkit.ts';
import { usePostgres } from '../helpers/postgres.ts';
import { Relay } from '../helpers/tcp-relay.ts';
import { Deliverer, FakeClock, pgStore, sendMail, useQueueScope } from './queue-harness.ts';

const scope = useQueueScope();
const database = usePostgres();

describe('queue-pg in running servers', () => {
  it('answers 451 4.3.0 while PostgreSQL is unreachable, loses nothing it acknowledged, and reconnects by itself', async () => {
    const url = new URL(await database());
    const relay = new Relay({ host: url.hostname, port: Number(url.port) });
    await relay.open();
    scope.defer(() => relay.cut());
    const viaRelay = new URL(url);
    viaRelay.port = String(relay.port);

    const clock = new FakeClock();
    const d = new Deliverer(clock);
    d.behaviour = () => ({ code: 451, enhanced: '4.3.0', text: 'not yet' });
    const s = await scope.start({
      store: pgStore(database),
      clock,
      dataDir: await scope.tempDir(),
      plugins: [d.plugin],
      queue: { connectionString: viaRelay.toString(), connectTimeout: '2s' },
    });
    const before = await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    await s.queue.runDue();
    expect(d.seen.map((x) => x.job.id)).toEqual([before]);

    await relay.cut();
    const c = await connectClient(s.port);
    try {
      await c.expect('EHLO client.test', 250);
      await c.expect('MAIL FROM:<alice@example.net>', 250);
      await c.expect('RCPT TO:<carol@example.com>', 250);
      await c.expect('DATA', 354);
      const r = await c.sendData('Subject: while the database is away\r\n\r\nHello.\r\n');
      expect([r.code, r.enhanced]).toEqual([451, '4.3.0']);
    } finally {
      await c.close();
    }

    await relay.open(); // the same port: the pool reconnects on its own
    d.behaviour = () => ({ code: 250, enhanced: '2.0.0', text: 'OK' });
    const after = await sendMail(s.port, { from: 'alice@example.net', to: ['dave@example.com'] });
    clock.advance(5 * 60_000);
    await s.queue.runDue();
    // The message acknowledged before the outage is retried and delivered; the refused one was never queued.
    expect(d.seen.map((x) => x.recipients[0]).sort()).toEqual([
      'bob@example.com',
      'bob@example.com',
      'dave@example.com',
    ]);
    expect(d.seen.filter((x) => x.job.id === after)).toHaveLength(1);
    expect(await s.queue.list()).toEqual([]);
  });

  it('delivers on another node what one node received: NOTIFY wakes it, no polling', async () => {
    const clock = new FakeClock();
    const dataDir = await scope.tempDir();
    const store = pgStore(database);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const busy = new Deliverer(clock, { name: 'deliver-a' });
    busy.behaviour = async () => {
      await gate;
      return { code: 250, enhanced: '2.0.0', text: 'OK' };
    };
    const other = new Deliverer(clock, { name: 'deliver-b' });
    let seenByB!: () => void;
    const deliveredByB = new Promise<void>((resolve) => {
      seenByB = resolve;
    });
    other.behaviour = () => {
      seenByB();
      return { code: 250, enhanced: '2.0.0', text: 'OK' };
    };
    // Node a runs one delivery at a time; node b polls only every 10 minutes (real time).
    const a = await scope.start({
      store,
      clock,
      dataDir,
      plugins: [busy.plugin],
      queue: { nodeId: 'node-a', concurrency: 1 },
    });
    const first = await sendMail(a.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    while (busy.seen.length === 0) await new Promise((r) => setTimeout(r, 5));
    // Node b starts once node a holds the first job (so the first job is surely a's).
    const b = await scope.start({
      store,
      clock,
      dataDir,
      plugins: [other.plugin],
      queue: { nodeId: 'node-b', leaseDuration: '10m' },
    });
    const second = await sendMail(a.port, { from: 'alice@example.net', to: ['carol@example.org'] });
    await deliveredByB;
    expect(busy.seen.map((x) => x.job.id)).toEqual([first]);
    expect(other.seen.map((x) => x.job.id)).toEqual([second]);
    release();
    await a.queue.runDue();
    await b.queue.runDue();
    expect(await a.queue.list()).toEqual([]);
  });
});
