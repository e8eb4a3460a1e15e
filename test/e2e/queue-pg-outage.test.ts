/**
 * queue-pg when PostgreSQL itself stops under load and comes back: two node
 * processes keep answering (new mail `451 4.3.0` while the database is down),
 * lose nothing they acknowledged, and deliver again by themselves once it is
 * back, with no new mail to wake them.
 *
 * This test stops and starts the database server, so it always runs its own
 * embedded PostgreSQL (test/helpers/pg-cluster.ts), also when
 * MAILFRAME_TEST_PG_URL names a shared server (which it cannot stop). It
 * never skips: without an embedded server it fails and says why.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Cleanups,
  DeliverySink,
  runCleanups,
  type SendResult,
  sendBatch,
  startControlledPostgres,
  startNode,
  until,
  withClient,
} from '../helpers/pg-cluster.ts';
import { freshSchema } from '../helpers/postgres.ts';

const cleanups: Cleanups = [];
afterEach(() => runCleanups(cleanups));

const DOMAINS = Array.from({ length: 5 }, (_, i) => `d${i}.example`);
const recipient = (i: number) => `r${i}@d${i % DOMAINS.length}.example`;

describe('queue-pg and a database outage', () => {
  it('answers 451 4.3.0 while PostgreSQL is down, loses nothing acknowledged, and delivers again by itself', async () => {
    const db = await startControlledPostgres(cleanups);
    const schema = freshSchema();
    const sink = new DeliverySink();
    await sink.start();
    cleanups.push(() => sink.close());
    const common = { url: db.url, schema, sinkPort: sink.port, domains: DOMAINS };
    const nodes = [
      await startNode({ ...common, name: 'node-1', queue: { leaseDuration: '2s' } }, cleanups),
      await startNode({ ...common, name: 'node-2', queue: { leaseDuration: '2s' } }, cleanups),
    ];
    const ports = nodes.map((n) => n.port);

    const drained = () =>
      withClient(db.url, async (c) => {
        const r = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".messages`);
        return r.rows[0]?.n === 0;
      });

    // Load: four connections sending back to back until told to stop (at most 2,000 messages), each
    // pausing 20 ms after a refusal. PostgreSQL stops under it, and the load stops while it is down.
    const results: SendResult[] = [];
    let stopLoad = false;
    const load = sendBatch(
      ports,
      Array.from({ length: 2000 }, (_, i) => recipient(i)),
      { stop: () => stopLoad, onResult: (r) => results.push(r), pauseAfterRefusal: 20 },
    );
    let downAt = 0;
    try {
      await until(() => results.filter((r) => r.code === 250).length >= 100, '100 messages accepted');
      await db.stop();
      downAt = Date.now();
      // Down for a while (longer than a lease): at least 40 messages refused, and 3 s.
      await until(
        () =>
          results.filter((r) => r.startedAt > downAt && r.step === 'data').length >= 40 &&
          Date.now() - downAt > 3000,
        'messages sent while the database is down',
      );
    } finally {
      stopLoad = true;
      await load;
    }
    // Refused while down: every message's data answered 451 4.3.0, none acknowledged.
    const whileDown = results.filter((r) => r.startedAt > downAt);
    expect(whileDown.filter((r) => r.code === 250)).toEqual([]);
    const dataReplies = whileDown.filter((r) => r.step === 'data');
    expect(dataReplies.length).toBeGreaterThanOrEqual(40);
    expect(dataReplies.filter((r) => r.code !== 451 || r.enhanced !== '4.3.0')).toEqual([]);
    const before = results.filter((r) => r.code === 250).map((r) => r.recipient);

    // Back up. No new mail comes to wake the nodes: they reconnect and find the jobs left by the
    // outage (leases whose settle failed expire; deliveries never started) on their own.
    await db.start();
    await until(
      drained,
      'the queue to drain after the restart',
      60_000,
      () => `${sink.deliveries.length} deliveries`,
    );
    const deliveredByThemselves = sink.counts();
    expect(before.filter((r) => !deliveredByThemselves.has(r))).toEqual([]);

    // And new mail is accepted and delivered again.
    const after = await sendBatch(
      ports,
      Array.from({ length: 20 }, (_, i) => recipient(10_000 + i)),
    );
    expect(after.filter((r) => r.code !== 250)).toEqual([]);
    await until(drained, 'the queue to drain', 60_000);
    const acknowledged = [...before, ...after.map((r) => r.recipient)];
    const counts = sink.counts();
    expect(acknowledged.filter((r) => !counts.has(r))).toEqual([]);
    // Nothing the nodes refused (or failed to store) was delivered.
    const acked = new Set(acknowledged);
    expect([...counts.keys()].filter((r) => !acked.has(r))).toEqual([]);
    // Deliveries whose result could not be recorded while the database was down are repeated (at
    // least once): at most one per delivery running at the stop, and one per result riding with an
    // insert then (up to twice the slots): per destination three times its slots, 5 domains x 5 x 3.
    const duplicates = [...counts].filter(([, n]) => n > 1).map(([r]) => r);
    expect(duplicates.length).toBeLessThanOrEqual(DOMAINS.length * 5 * 3);
    expect(Math.max(...counts.values())).toBeLessThanOrEqual(2);
    const refused = [...results, ...after].filter((r) => r.code !== 250);
    console.log(
      `queue-pg database outage: ${acknowledged.length} messages acknowledged, ${refused.length} refused ` +
        `(${JSON.stringify(Object.fromEntries(Object.entries(Object.groupBy(refused, (r) => `${r.code} ${r.enhanced ?? ''}`)).map(([k, v]) => [k, v?.length])))}), ` +
        `${sink.deliveries.length} deliveries, ${duplicates.length} recipients delivered twice`,
    );
  }, 120_000);
});
