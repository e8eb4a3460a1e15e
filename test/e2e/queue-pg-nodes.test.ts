/**
 * queue-pg across node processes on one database: a node killed with SIGKILL
 * while it holds leases mid-delivery, and eight nodes sharing one queue.
 * Every node is `mailframe start` in a child process relaying to the test's
 * sink (test/helpers/pg-cluster.ts); the sink counts deliveries per recipient.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Cleanups,
  DeliverySink,
  killNode,
  type RunningNode,
  runCleanups,
  sendBatch,
  startNode,
  until,
  withClient,
} from '../helpers/pg-cluster.ts';
import { freshSchema, usePostgres } from '../helpers/postgres.ts';

const database = usePostgres();
const cleanups: Cleanups = [];
afterEach(() => runCleanups(cleanups));

const DOMAINS = Array.from({ length: 10 }, (_, i) => `d${i}.example`);
const recipientsFrom = (prefix: string, n: number, first = 0) =>
  Array.from({ length: n }, (_, i) => `${prefix}${first + i}@d${(first + i) % DOMAINS.length}.example`);

/** Messages still in the queue (every node empty when this is 0). */
const queued = (url: string, schema: string) =>
  withClient(url, async (c) => {
    const r = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".messages`);
    return r.rows[0]?.n ?? -1;
  });

describe('queue-pg nodes', () => {
  it('a node killed mid-delivery: its jobs are delivered by the others after lease expiry, duplicates only in the at-least-once window', async () => {
    const url = await database();
    const schema = freshSchema();
    const sink = new DeliverySink();
    await sink.start();
    cleanups.push(() => sink.close());

    // The victim's deliveries hang at the sink: the first two after the message is in (the remote
    // side has it; the 250 never reaches the node), the next two before RCPT is answered.
    let atData = 0;
    let atRcpt = 0;
    sink.hold = (node, point) => {
      if (node !== 'node-2.test') return false;
      if (point === 'rcpt' && atData >= 2 && atRcpt < 2) {
        atRcpt++;
        return true;
      }
      if (point === 'data' && atData < 2) {
        atData++;
        return true;
      }
      return false;
    };

    const common = { url, schema, sinkPort: sink.port, domains: DOMAINS };
    // Short leases for the test: a dead node's jobs come back 2 s after its last renewal.
    const nodes: RunningNode[] = [];
    for (const [name, concurrency] of [
      ['node-1', 10],
      ['node-2', 4],
      ['node-3', 10],
    ] as const)
      nodes.push(await startNode({ ...common, name, queue: { leaseDuration: '2s', concurrency } }, cleanups));
    const [n1, victim, n3] = nodes as [RunningNode, RunningNode, RunningNode];

    const first = await sendBatch(
      nodes.map((n) => n.port),
      recipientsFrom('a', 150),
    );
    expect(first.filter((r) => r.code !== 250)).toEqual([]);
    // Every delivery slot of the victim is stuck at the sink (concurrency 4: two at each point).
    await until(
      () => sink.held.filter((h) => h.node === 'node-2.test').length === 4,
      'the victim holding four deliveries at the sink',
      30_000,
      () => JSON.stringify(sink.held),
    );
    const leasedByVictim = await withClient(url, async (c) => {
      const r = await c.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM "${schema}".jobs WHERE lease_owner = 'node-2' AND lease_token IS NOT NULL`,
      );
      return r.rows[0]?.n ?? 0;
    });
    const inFlight = sink.held.filter((h) => h.node === 'node-2.test');
    const remoteComplete = inFlight.filter((h) => h.point === 'data').map((h) => h.recipient);
    await killNode(victim);
    expect(victim.child.signalCode).toBe('SIGKILL');

    // Mail keeps coming to the two nodes left.
    const second = await sendBatch([n1.port, n3.port], recipientsFrom('b', 150));
    expect(second.filter((r) => r.code !== 250)).toEqual([]);
    const acknowledged = [...first, ...second].map((r) => r.recipient);
    expect(acknowledged).toHaveLength(300);

    await until(
      async () => (await queued(url, schema)) === 0,
      'the queue to drain',
      60_000,
      () => `${sink.deliveries.length} deliveries`,
    );
    const counts = sink.counts();
    const missing = acknowledged.filter((r) => !counts.has(r));
    expect(missing).toEqual([]);
    const duplicates = [...counts].filter(([, n]) => n > 1).map(([r]) => r);
    console.log(
      `queue-pg node failure: ${acknowledged.length} messages acknowledged, ${sink.deliveries.length} deliveries, ` +
        `victim held ${leasedByVictim} leases (${inFlight.length} deliveries at the sink, ${remoteComplete.length} of them complete there) ` +
        `at SIGKILL; ${duplicates.length} recipients delivered twice: ${duplicates.join(', ')}`,
    );
    // At least once: a delivery the remote side completed, whose settle the kill prevented, is
    // repeated; nothing else is. The duplicates are bounded by the victim's deliveries in flight.
    expect(leasedByVictim).toBeGreaterThanOrEqual(inFlight.length);
    expect(duplicates.length).toBeLessThanOrEqual(inFlight.length);
    expect(duplicates.sort()).toEqual([...remoteComplete].sort());
    expect(Math.max(...counts.values())).toBeLessThanOrEqual(2);
    // The victim's jobs went to the nodes still alive.
    for (const h of inFlight) {
      const by = sink.deliveries.filter((d) => d.recipient === h.recipient && d.node !== 'node-2.test');
      expect(by.map((d) => d.node)).toHaveLength(1);
    }
  }, 120_000);

  it('eight nodes on one database deliver 8 x 100 messages exactly once', async () => {
    const url = await database();
    const schema = freshSchema();
    const sink = new DeliverySink();
    await sink.start();
    cleanups.push(() => sink.close());
    const common = { url, schema, sinkPort: sink.port, domains: DOMAINS };
    // One after the other: eight processes compiling at once on a small machine start slowly.
    const nodes: RunningNode[] = [];
    for (let i = 1; i <= 8; i++)
      nodes.push(
        await startNode({ ...common, name: `node-${i}`, queue: { concurrency: 10, poolSize: 3 } }, cleanups),
      );

    // What the nodes' database sessions wait on while the load runs, sampled from a connection of the
    // test's own: ungranted locks (pg_locks) and wait events of active sessions (pg_stat_activity).
    const waits = new Map<string, number>();
    let samples = 0;
    let busy = 0;
    let sampling = true;
    const sampler = withClient(url, async (c) => {
      while (sampling) {
        const r = await c.query<{ what: string }>(
          `SELECT 'lock ' || l.locktype || ' ' || coalesce(l.relation::regclass::text, l.classid::regclass::text || '/' || l.objid, '') || ' ' || l.mode AS what
             FROM pg_locks l WHERE NOT l.granted
           UNION ALL
           SELECT 'wait ' || coalesce(a.wait_event_type || ':' || a.wait_event, 'CPU') FROM pg_stat_activity a
             WHERE a.application_name LIKE 'mailframe %' AND a.state = 'active'`,
        );
        samples++;
        for (const { what } of r.rows) {
          if (what.startsWith('wait ')) busy++;
          waits.set(what, (waits.get(what) ?? 0) + 1);
        }
        await new Promise((ok) => setTimeout(ok, 5));
      }
    });
    let results: Awaited<ReturnType<typeof sendBatch>>;
    try {
      results = await sendBatch(
        nodes.map((n) => n.port),
        recipientsFrom('c', 800),
        { connections: 2 },
      );
      await until(async () => (await queued(url, schema)) === 0, 'the queue to drain', 60_000);
    } finally {
      sampling = false;
      await sampler;
    }
    expect(results.filter((r) => r.code !== 250)).toEqual([]);
    const counts = sink.counts();
    expect(counts.size).toBe(800);
    expect([...counts].filter(([, n]) => n !== 1)).toEqual([]);
    const perNode = new Map<string, number>();
    for (const d of sink.deliveries) perNode.set(d.node, (perNode.get(d.node) ?? 0) + 1);
    console.log(
      `queue-pg 8 nodes: 800 messages delivered once each; deliveries per node ${JSON.stringify(Object.fromEntries([...perNode].sort()))}; ` +
        `${samples} samples, ${busy} active node sessions seen, by what they waited on: ${JSON.stringify(Object.fromEntries([...waits].sort((a, b) => b[1] - a[1])))}`,
    );
  }, 300_000);
});
