/**
 * What only a shared database brings: two stores (two nodes) on one schema,
 * leases taken over after expiry, stale settles, per-destination limits across
 * nodes, NOTIFY wake-ups, migrations, the quarantine, and large messages in chunk rows. On a
 * real PostgreSQL (test/helpers/postgres.ts), with an injected clock.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import pg from 'pg';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../core/log.ts';
import type { Logger } from '../../core/types.ts';
import { freshSchema, usePostgres } from '../../test/helpers/postgres.ts';
import type { DestinationRoom, EnvelopeInput, Lease } from '../queue/types.ts';
import { ident, migrate, SCHEMA_VERSION } from './migrations.ts';
import { PgQueueStore } from './store.ts';

const database = usePostgres();

class Clock {
  t = Date.parse('2026-03-02T10:00:00.000Z');
  now(): number {
    return this.t;
  }
}

let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

const LEASE = 60_000;

interface Node {
  readonly store: PgQueueStore;
  readonly logs: Array<{ msg: string; qid?: string }>;
}

async function node(
  schema: string,
  clock: Clock,
  nodeId: string,
  opts: {
    chunkSize?: number;
    log?: Logger;
    scheduling?: { concurrency: number; perDestination: number };
  } = {},
): Promise<Node> {
  const logs: Node['logs'] = [];
  const log =
    opts.log ??
    pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line) as Node['logs'][number]) });
  const store = await PgQueueStore.open({
    connection: { connectionString: await database() },
    poolSize: 4,
    schema,
    nodeId,
    leaseDuration: LEASE,
    clock,
    log,
    ...(opts.chunkSize === undefined ? {} : { chunkSize: opts.chunkSize }),
    ...(opts.scheduling === undefined ? {} : { scheduling: opts.scheduling }),
  });
  cleanup.push(() => store.close());
  return { store, logs };
}

function envelope(clock: Clock, to: string): EnvelopeInput {
  return {
    from: 'alice@example.net',
    recipients: [{ address: to, domain: to.slice(to.indexOf('@') + 1), attributes: {} }],
    attributes: {},
    receivedAt: clock.now(),
  };
}

const body = (n: number) => Buffer.from(`Subject: message ${n}\r\n\r\nHello ${n}.\r\n`);

function room(perDestination: number): DestinationRoom {
  return { perDestination, busy: new Map() };
}

const delivered = (lease: Lease) =>
  lease.recipients.map((r) => ({
    index: r.index,
    status: 'delivered' as const,
    reply: { code: 250, text: 'OK' },
  }));

/** Record the SQL of every query the store's pool runs. */
function recordQueries(store: PgQueueStore): string[] {
  const sql: string[] = [];
  const query = store.pool.query.bind(store.pool);
  store.pool.query = ((text: string | pg.QueryConfig, values?: unknown[]) => {
    sql.push(typeof text === 'string' ? text : text.text);
    return query(text, values);
  }) as typeof store.pool.query;
  return sql;
}

/** The statement storing messages (one per group), and the statements recording settles alone. */
const isInsert = (sql: string) => sql.includes('.messages (id, sender,');
const isSettle = (sql: string) =>
  !isInsert(sql) && (sql.includes('.settle_many(') || sql.includes('sj AS (DELETE'));

/** Resolves at the store's next wake-up (a NOTIFY from another node). */
function nextWake(store: PgQueueStore): Promise<void> {
  return new Promise((resolve) => {
    let first = true;
    store.onWake(() => {
      if (first) resolve();
      first = false;
    });
  });
}

describe('queue-pg: two nodes on one database', () => {
  it('lets another node take a job over once its lease expires, and drops the late settle of the first', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const b = await node(schema, clock, 'node-b');
    const id = await a.store.enqueue(envelope(clock, 'bob@example.com'), body(1));

    const [first] = await a.store.leaseDue(clock.now(), 10, room(5));
    expect(first?.id).toBe(id);
    expect(await b.store.leaseDue(clock.now(), 10, room(5))).toEqual([]);
    expect((await b.store.show(id))?.state).toBe('active');

    clock.t += LEASE + 1; // node a stopped renewing (it died, or hung)
    const [taken] = await b.store.leaseDue(clock.now(), 10, room(5));
    expect(taken?.id).toBe(id);
    expect(taken?.recipients.map((r) => r.address)).toEqual(['bob@example.com']);

    // Node a's delivery finishes after all: its results must not count.
    await a.store.settle(first as Lease, delivered(first as Lease), clock.now());
    expect(a.logs.map((l) => l.msg)).toContain(
      'delivery finished after its lease was taken over (or the message was deleted): its results are not recorded',
    );
    const still = await b.store.show(id);
    expect(still?.recipientStates.map((r) => [r.status, r.attempts])).toEqual([['pending', 0]]);

    await b.store.settle(
      taken as Lease,
      [
        {
          index: 0,
          status: 'deferred',
          reply: { code: 451, text: 'later' },
          nextAttemptAt: clock.now() + 300_000,
        },
      ],
      clock.now(),
    );
    const after = await a.store.show(id);
    expect(after?.recipientStates.map((r) => [r.status, r.attempts, r.reply?.text])).toEqual([
      ['pending', 1, 'later'],
    ]);
    expect(after?.state).toBe('deferred');
  });

  it('never races itself: a node does not lease again a job it is still delivering, even past the expiry', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const b = await node(schema, clock, 'node-b');
    await a.store.enqueue(envelope(clock, 'bob@example.com'), body(1));
    const [lease] = await a.store.leaseDue(clock.now(), 10, room(5));
    clock.t += LEASE + 1;
    expect(await a.store.leaseDue(clock.now(), 10, room(5))).toEqual([]);
    expect(await a.store.nextDue(room(5))).toBeUndefined();
    // Another node may take it over (a's renewals stopped).
    expect((await b.store.leaseDue(clock.now(), 10, room(5))).map((l) => l.id)).toEqual([lease?.id]);
  });

  it('keeps a lease while its node renews it', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const b = await node(schema, clock, 'node-b');
    await a.store.enqueue(envelope(clock, 'bob@example.com'), body(1));
    const [lease] = await a.store.leaseDue(clock.now(), 10, room(5));
    clock.t += LEASE - 1000;
    await a.store.renewLeases();
    clock.t += LEASE - 1000; // past the first expiry, within the renewed one
    expect(await b.store.leaseDue(clock.now(), 10, room(5))).toEqual([]);
    await a.store.settle(lease as Lease, delivered(lease as Lease), clock.now());
    expect(await b.store.list()).toEqual([]);
    expect(a.logs.filter((l) => /lease/.test(l.msg))).toEqual([]);
  });

  it('removes a message whose jobs at two destinations settle at the same moment', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const b = await node(schema, clock, 'node-b');
    await a.store.enqueue(
      {
        ...envelope(clock, 'bob@example.com'),
        recipients: [
          { address: 'bob@example.com', domain: 'example.com', attributes: {} },
          { address: 'bob@example.org', domain: 'example.org', attributes: {} },
        ],
      },
      body(1),
    );
    const [first] = await a.store.leaseDue(clock.now(), 1, room(5));
    const [second] = await b.store.leaseDue(clock.now(), 1, room(5));
    expect([first?.destination, second?.destination].sort()).toEqual(['example.com', 'example.org']);
    // Slow each settle down before and after it looks for pending recipients, so
    // that both look while the other is still open.
    const s = ident(schema);
    await a.store.pool.query(`CREATE FUNCTION ${s}.slow() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$`);
    await a.store.pool.query(
      `CREATE TRIGGER slow AFTER UPDATE ON ${s}.recipients FOR EACH STATEMENT EXECUTE FUNCTION ${s}.slow()`,
    );
    await a.store.pool.query(
      `CREATE TRIGGER slow AFTER UPDATE OR DELETE ON ${s}.jobs FOR EACH STATEMENT EXECUTE FUNCTION ${s}.slow()`,
    );
    await Promise.all([
      a.store.settle(first as Lease, delivered(first as Lease), clock.now()),
      b.store.settle(second as Lease, delivered(second as Lease), clock.now()),
    ]);
    expect(await a.store.list()).toEqual([]);
  });

  it('holds the per-destination limit across nodes: slots, kept while used and let go when idle for a renewal period', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const b = await node(schema, clock, 'node-b');
    for (let i = 0; i < 5; i++) await a.store.enqueue(envelope(clock, `u${i}@example.com`), body(i));

    const fromA = await a.store.leaseDue(clock.now(), 10, room(2));
    expect(fromA.map((l) => l.recipients[0]?.address)).toEqual(['u0@example.com', 'u1@example.com']);
    // Node b has no job running, but example.com's 2 slots are node a's.
    expect(await b.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    expect(await b.store.nextDue(room(2))).toBeUndefined();

    await a.store.enqueue(envelope(clock, 'x@example.org'), body(9));
    const other = await b.store.leaseDue(clock.now(), 10, room(2));
    expect(other.map((l) => l.destination)).toEqual(['example.org']);

    // a's settle frees one of its slots: a runs the next job there, b still none.
    await a.store.settle(fromA[0] as Lease, delivered(fromA[0] as Lease), clock.now());
    expect(await b.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    const more = await a.store.leaseDue(clock.now(), 10, room(2));
    expect(more.map((l) => l.recipients[0]?.address)).toEqual(['u2@example.com']);
    expect((await a.store.stats()).active).toBe(3);

    // a finishes; its slots stay a's through the renewal that follows (it used both since
    // the one before) and are let go at the next, unused meanwhile: then b takes them.
    for (const l of [fromA[1], more[0]]) await a.store.settle(l as Lease, delivered(l as Lease), clock.now());
    await a.store.renewLeases();
    expect(await b.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    await a.store.renewLeases();
    const next = await b.store.leaseDue(clock.now(), 10, room(2));
    expect(next.map((l) => l.recipients[0]?.address)).toEqual(['u3@example.com', 'u4@example.com']);
    expect(await a.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
  });

  it('leases for a destination at its limit without reading its backlog of due jobs, and still finds the destinations due after it', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const backlog = 300;
    await Promise.all(
      Array.from({ length: backlog }, (_, i) =>
        a.store.enqueue(envelope(clock, `u${i}@busy.example`), body(i)),
      ),
    );
    clock.t += 1;
    const late = await a.store.enqueue(envelope(clock, 'bob@quiet.example'), body(0));
    clock.t += 1;

    // Called as the store calls it, in a transaction of our own, to read how many
    // rows of the jobs table it read, by index or sequential scan (a count, not a time).
    const client = new pg.Client({ connectionString: await database() });
    await client.connect();
    try {
      // With the statistics autovacuum keeps (a fresh table has none).
      await client.query(`ANALYZE ${ident(schema)}.jobs`);
      await client.query('BEGIN');
      const { rows: all } = await client.query<{ id: string | null; destination: string }>(
        `SELECT id, destination FROM ${ident(schema)}.lease_due('node-b', $1, 100, 5, $2, '{}', '{}', '{}', '{}')`,
        [clock.now(), clock.now() + LEASE],
      );
      const fetched = await client.query<{ n: string }>(
        `SELECT pg_stat_get_xact_tuples_fetched(t) + pg_stat_get_xact_tuples_returned(t) AS n
         FROM (SELECT '${ident(schema)}.jobs'::regclass AS t) x`,
      );
      await client.query('COMMIT');
      // Jobs leased (the slots taken there and the last row have no id).
      const rows = all.filter((r) => r.id !== null);
      expect(rows.filter((r) => r.destination === 'busy.example')).toHaveLength(5);
      expect(rows.filter((r) => r.destination === 'quiet.example').map((r) => r.id)).toEqual([late]);
      // 5 leased at busy.example, 1 at quiet.example, the first 64 due jobs
      // looked at to find destinations: far from the 300 of the backlog.
      expect(Number(fetched.rows[0]?.n)).toBeLessThan(backlog / 2);
    } finally {
      await client.end();
    }
  });

  it('wakes the other node by NOTIFY when mail is queued, released or retried', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const b = await node(schema, clock, 'node-b');
    let wakes = 0;
    let waiting: (() => void) | undefined;
    b.store.onWake(() => {
      wakes++;
      waiting?.();
    });
    const woken = () =>
      new Promise<void>((resolve) => {
        waiting = resolve;
      });

    let wake = woken();
    const id = await a.store.enqueue(envelope(clock, 'bob@example.com'), body(1));
    await wake;
    expect(wakes).toBe(1);

    expect(await a.store.hold(id)).toBe(true);
    wake = woken();
    expect(await a.store.release(id)).toBe(true);
    await wake;
    wake = woken();
    expect(await a.store.retryNow(id)).toBe(true);
    await wake;
    expect(wakes).toBe(3);
  });
});

describe('queue-pg: jobs leased by the statement that stores them', () => {
  const scheduling = { concurrency: 10, perDestination: 2 };

  it('leases new jobs to the node storing them where it holds a slot, runs at most its slots there, and hands them out without a database round trip', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a', { scheduling });
    const b = await node(schema, clock, 'node-b', { scheduling });
    const woken = nextWake(a.store);
    // b takes one of example.com's two slots (half of them) with the statement storing u0.
    await b.store.enqueue(envelope(clock, 'u0@example.com'), body(0));
    await woken;
    // a looks (b's job is b's already): now it knows what the database holds for it.
    expect(await a.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    // a takes the other slot with the first of its messages; all three are leased to it on arrival.
    for (let i = 1; i < 4; i++) await a.store.enqueue(envelope(clock, `u${i}@example.com`), body(i));
    expect((await a.store.stats()).active).toBe(4);
    const sql = recordQueries(a.store);
    // One slot: one delivery at a time there, whatever the scheduler's room.
    const fromA = await a.store.leaseDue(clock.now(), 10, room(2));
    expect(fromA.map((l) => l.recipients.map((r) => r.address))).toEqual([['u1@example.com']]);
    expect(await a.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    // Nothing for a before b's lease of u0 expires.
    expect(await a.store.nextDue(room(2))).toBe(clock.now() + LEASE);
    const fromB = await b.store.leaseDue(clock.now(), 10, room(2));
    expect(fromB.map((l) => l.recipients[0]?.address)).toEqual(['u0@example.com']);
    // a's settle frees its slot: the next of its ready jobs runs.
    await a.store.settle(fromA[0] as Lease, delivered(fromA[0] as Lease), clock.now());
    expect(await a.store.nextDue(room(2))).toBe(clock.now());
    const next = await a.store.leaseDue(clock.now(), 10, room(2));
    expect(next.map((l) => l.recipients[0]?.address)).toEqual(['u2@example.com']);
    expect(sql.filter((q) => q.includes('.lease_due(') || q.includes('.next_due('))).toEqual([]);

    // A third node finds no slot free: its job is stored unleased, and b, whose slot is
    // free again, takes it from the database once woken.
    const c = await node(schema, clock, 'node-c', { scheduling });
    await b.store.settle(fromB[0] as Lease, delivered(fromB[0] as Lease), clock.now());
    const wokenB = nextWake(b.store);
    const id = await c.store.enqueue(envelope(clock, 'u4@example.com'), body(4));
    await wokenB;
    expect(await c.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    expect((await b.store.leaseDue(clock.now(), 10, room(2))).map((l) => l.id)).toEqual([id]);
  });

  it('hands out the jobs leased on arrival even when the look for more fails', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a', { scheduling, log: silentLogger() });
    const id = await a.store.enqueue(envelope(clock, 'bob@example.com'), body(1));
    // The database refuses the look for more (a real error: the function is not there).
    await a.store.pool.query(`ALTER FUNCTION ${ident(schema)}.lease_due RENAME TO lease_due_away`);
    const leases = await a.store.leaseDue(clock.now(), 10, room(2));
    expect(leases.map((l) => l.id)).toEqual([id]);
    await a.store.pool.query(`ALTER FUNCTION ${ident(schema)}.lease_due_away RENAME TO lease_due`);
    await a.store.settle(leases[0] as Lease, delivered(leases[0] as Lease), clock.now());
    expect(await a.store.list()).toEqual([]);
  });

  it('never leases a quarantined message on arrival', async () => {
    const clock = new Clock();
    const a = await node(freshSchema(), clock, 'node-a', { scheduling });
    const id = await a.store.enqueue(
      { ...envelope(clock, 'bob@example.com'), attributes: { quarantine: { check: 'x', result: 'y' } } },
      body(1),
    );
    expect(await a.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    expect((await a.store.show(id))?.state).toBe('quarantined');
  });

  it('lets another node take over a job leased on arrival by a node that died before delivering it', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a', { scheduling });
    const b = await node(schema, clock, 'node-b', { scheduling });
    const id = await a.store.enqueue(envelope(clock, 'bob@example.com'), body(1));
    expect((await b.store.show(id))?.state).toBe('active');
    expect(await b.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    await a.store.close(); // a dies: its lease is never renewed nor settled
    clock.t += LEASE + 1;
    const [taken] = await b.store.leaseDue(clock.now(), 10, room(2));
    expect(taken?.id).toBe(id);
    await b.store.settle(taken as Lease, delivered(taken as Lease), clock.now());
    expect(await b.store.list()).toEqual([]);
  });

  it('answers nextDue from what it knows, and still sees a job another node stored (by its wake-up) and a deferred retry', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a', { scheduling });
    // b stores without leasing (as the CLI's store does).
    const b = await node(schema, clock, 'node-b');
    expect(await a.store.nextDue(room(2))).toBeUndefined();
    const sql = recordQueries(a.store);
    expect(await a.store.nextDue(room(2))).toBeUndefined();
    expect(sql).toEqual([]);

    const woken = nextWake(a.store);
    const id = await b.store.enqueue(envelope(clock, 'bob@example.com'), body(1));
    await woken;
    expect(await a.store.nextDue(room(2))).toBe(clock.now());
    const [lease] = await a.store.leaseDue(clock.now(), 10, room(2));
    expect(lease?.id).toBe(id);

    const retryAt = clock.now() + 30_000;
    sql.length = 0;
    await a.store.settle(
      lease as Lease,
      [{ index: 0, status: 'deferred', reply: { code: 451, text: 'later' }, nextAttemptAt: retryAt }],
      clock.now(),
    );
    expect(await a.store.nextDue(room(2))).toBe(retryAt);
    expect(await a.store.leaseDue(clock.now(), 10, room(2))).toEqual([]);
    expect(sql.filter((q) => !isSettle(q))).toEqual([]);
    clock.t = retryAt;
    expect((await a.store.leaseDue(clock.now(), 10, room(2))).map((l) => l.id)).toEqual([id]);
  });

  it('settles leases finishing together in one statement; a stale one among them does not keep the others from being recorded', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const b = await node(schema, clock, 'node-b');
    const ids: string[] = [];
    for (let i = 0; i < 6; i++)
      ids.push(await a.store.enqueue(envelope(clock, `u${i}@example.com`), body(i)));
    const leases = await a.store.leaseDue(clock.now(), 10);
    expect(leases).toHaveLength(6);
    clock.t += LEASE + 1; // a stopped renewing: b takes one over
    const [taken] = await b.store.leaseDue(clock.now(), 1);
    const lost = leases.find((l) => l.id === taken?.id);
    const others = leases.filter((l) => l !== lost);
    const sql = recordQueries(a.store);
    // Two settles go out at once; the others (the stale one among them) wait and go together.
    const all = [...others.slice(0, 2), lost as Lease, ...others.slice(2)];
    await Promise.all(all.map((l) => a.store.settle(l, delivered(l), clock.now())));
    expect(sql.filter(isSettle).length).toBeLessThan(all.length);
    expect(
      a.logs.filter((l) => l.msg.startsWith('delivery finished after its lease was taken over')),
    ).toHaveLength(1);
    expect((await a.store.list()).map((m) => m.id)).toEqual([lost?.id]);
    expect((await a.store.show(lost?.id as string))?.recipientStates.map((r) => r.attempts)).toEqual([0]);
  });
});

describe('queue-pg: settles riding with inserts', () => {
  const scheduling = { concurrency: 10, perDestination: 6 };

  /** Node a with three jobs leased and handed out. */
  async function threeLeases(clock: Clock, a: Node): Promise<Lease[]> {
    for (let i = 0; i < 3; i++) await a.store.enqueue(envelope(clock, `u${i}@example.com`), body(i));
    const leases = await a.store.leaseDue(clock.now(), 10, room(6));
    expect(leases).toHaveLength(3);
    return leases;
  }

  it('sends a final settle waiting behind busy settle statements with the insert that starts meanwhile: one statement for both', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a', { scheduling });
    const leases = await threeLeases(clock, a);
    const sql = recordQueries(a.store);
    // Two settle statements go out at once (SETTLE_IN_FLIGHT); the third settle waits
    // for one of them, and the insert that starts meanwhile takes it along.
    const [first, second, third] = leases as [Lease, Lease, Lease];
    const settles = [first, second, third].map((l) => a.store.settle(l, delivered(l), clock.now()));
    const id = await a.store.enqueue(envelope(clock, 'carol@example.org'), body(9));
    await Promise.all(settles);
    // (The wake-up NOTIFY goes on its own timer.)
    const statements = sql.filter((q) => !q.includes('pg_notify'));
    expect(statements.map((q) => (isInsert(q) ? 'insert' : isSettle(q) ? 'settle' : q))).toEqual([
      'settle',
      'settle',
      'insert',
    ]);
    expect(statements[2]).toContain('sj AS (DELETE');
    expect((await a.store.list()).map((m) => m.id)).toEqual([id]);
    expect(a.logs.filter((l) => /lease/.test(l.msg))).toEqual([]);
  });

  it('lets a final settle made while a message is being stored ride with the next insert, and the delivery end at once', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a', { scheduling });
    const [lease] = await threeLeases(clock, a);
    const sql = recordQueries(a.store);
    const second = a.store.enqueue(envelope(clock, 'carol@example.org'), body(8));
    // An insert is under way: the settle ends for the scheduler before any statement has
    // answered, and its result goes with the insert that starts next.
    let ended = false;
    const settled = a.store.settle(lease as Lease, delivered(lease as Lease), clock.now()).then(() => {
      ended = true;
    });
    const third = a.store.enqueue(envelope(clock, 'dave@example.org'), body(9));
    await Promise.resolve();
    await Promise.resolve();
    expect(ended).toBe(true);
    await Promise.all([second, third, settled]);
    const statements = sql.filter((q) => !q.includes('pg_notify'));
    expect(statements.map((q) => (isInsert(q) ? 'insert' : q))).toEqual(['insert', 'insert']);
    expect(statements[1]).toContain('sj AS (DELETE');
    expect((await a.store.list()).map((m) => m.id)).not.toContain(lease?.id);
    expect(a.logs.filter((l) => /lease|result/.test(l.msg))).toEqual([]);
  });

  it('lets at most twice the slots it holds at a destination ride at once; the next result goes as a settle statement', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    // One slot at example.com: one delivery at a time there, and at most two results riding.
    const a = await node(schema, clock, 'node-a', { scheduling: { concurrency: 10, perDestination: 1 } });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++)
      ids.push(await a.store.enqueue(envelope(clock, `u${i}@example.com`), body(i)));
    const sql = recordQueries(a.store);
    // Two more messages: the first one's insert is under way, the second waits for it (and
    // takes the riders along).
    const stored = [
      a.store.enqueue(envelope(clock, 'carol@example.org'), body(8)),
      a.store.enqueue(envelope(clock, 'dave@example.org'), body(9)),
    ];
    const ended: boolean[] = [];
    const settles: Promise<void>[] = [];
    for (let i = 0; i < 3; i++) {
      // The slot a riding result leaves is free at once: the next ready job is handed out.
      const [lease] = await a.store.leaseDue(clock.now(), 1, room(1));
      if (!lease) throw new Error(`no lease ready for delivery ${i}`);
      const n = ended.push(false) - 1;
      settles.push(
        a.store.settle(lease, delivered(lease), clock.now()).then(() => {
          ended[n] = true;
        }),
      );
      await Promise.resolve();
      await Promise.resolve();
    }
    expect(ended).toEqual([true, true, false]);
    await Promise.all([...stored, ...settles]);
    expect(
      sql
        .filter((q) => !q.includes('pg_notify'))
        .map((q) => (isInsert(q) ? 'insert' : isSettle(q) ? 'settle' : 'other')),
    ).toEqual(['insert', 'settle', 'insert']);
    expect((await a.store.list()).map((m) => m.id).filter((id) => ids.includes(id))).toHaveLength(1);
    expect(a.logs.filter((l) => /lease|result/.test(l.msg))).toEqual([]);
  });

  it('reports a stale settle that rode with an insert, and records nothing for it', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a', { scheduling });
    const b = await node(schema, clock, 'node-b');
    const [first, second, third] = (await threeLeases(clock, a)) as [Lease, Lease, Lease];
    clock.t += LEASE + 1; // a stopped renewing: b takes the third job over
    const taken = await b.store.leaseDue(clock.now(), 3, room(6));
    expect(taken.map((l) => l.id).sort()).toEqual([first.id, second.id, third.id].sort());
    const sql = recordQueries(a.store);
    const settles = [first, second, third].map((l) => a.store.settle(l, delivered(l), clock.now()));
    await a.store.enqueue(envelope(clock, 'carol@example.org'), body(9));
    await Promise.all(settles);
    expect(sql.filter(isSettle)).toHaveLength(2);
    expect(
      a.logs.filter((l) => l.msg.startsWith('delivery finished after its lease was taken over')),
    ).toHaveLength(3);
    expect((await b.store.show(third.id))?.recipientStates.map((r) => r.status)).toEqual(['pending']);
  });
});

describe('queue-pg: schema', () => {
  it('upgrades a version 1 schema with mail in it, leased and not, to the current version', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const s = ident(schema);
    const pool = new pg.Pool({ connectionString: await database() });
    cleanup.push(() => pool.end());
    expect(await migrate(pool, schema, 1)).toEqual([1]);
    // Two messages stored by a version 1 node; it leased the second one and died.
    for (const [n, leased] of [
      ['000000001aaaaaaaa', false],
      ['000000002aaaaaaaa', true],
    ] as const) {
      await pool.query(
        `INSERT INTO ${s}.messages (id, sender, attributes, received_at, size, body) VALUES ($1, 'a@example.net', '{}', $2, 4, 'Hi
')`,
        [n, clock.now()],
      );
      await pool.query(
        `INSERT INTO ${s}.recipients (message_id, idx, address, domain, attributes, next_attempt_at) VALUES ($1, 0, 'bob@example.com', 'example.com', '{}', $2)`,
        [n, clock.now()],
      );
      await pool.query(
        `INSERT INTO ${s}.jobs (message_id, destination, due_at, lease_owner, lease_token, lease_expires)
         VALUES ($1, 'example.com', $2, $3, CASE WHEN $3::text IS NULL THEN NULL ELSE nextval('${s}.lease_tokens') END, $4)`,
        leased ? [n, clock.now() + LEASE, 'old-node', clock.now() + LEASE] : [n, clock.now(), null, null],
      );
    }
    const a = await node(schema, clock, 'node-a', { scheduling: { concurrency: 10, perDestination: 5 } });
    const { rows } = await pool.query(`SELECT version FROM ${s}.schema_version ORDER BY version`);
    expect(rows).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));
    const [first] = await a.store.leaseDue(clock.now(), 10, room(5));
    expect(first?.id).toBe('000000001aaaaaaaa');
    await a.store.settle(first as Lease, delivered(first as Lease), clock.now());
    clock.t += LEASE + 1;
    const [second] = await a.store.leaseDue(clock.now(), 10, room(5));
    expect(second?.id).toBe('000000002aaaaaaaa');
    await a.store.settle(second as Lease, delivered(second as Lease), clock.now());
    const id = await a.store.enqueue(envelope(clock, 'carol@example.com'), body(3));
    const [third] = await a.store.leaseDue(clock.now(), 10, room(5));
    expect(third?.id).toBe(id);
    await a.store.settle(third as Lease, delivered(third as Lease), clock.now());
    expect(await a.store.list()).toEqual([]);
  });

  it('applies its migrations once and refuses a schema newer than it knows', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    await node(schema, clock, 'node-a', { log: silentLogger() });
    const pool = new pg.Pool({ connectionString: await database() });
    cleanup.push(() => pool.end());
    expect(await migrate(pool, schema)).toEqual([]);
    const { rows } = await pool.query(`SELECT version FROM ${ident(schema)}.schema_version`);
    expect(rows).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));

    await pool.query(`INSERT INTO ${ident(schema)}.schema_version (version) VALUES ($1)`, [
      SCHEMA_VERSION + 1,
    ]);
    await expect(node(schema, clock, 'node-b', { log: silentLogger() })).rejects.toThrow(
      `the queue schema "${schema}" is at version ${SCHEMA_VERSION + 1}, newer than this mailframe knows (${SCHEMA_VERSION})`,
    );
  });
});

describe('queue-pg: message storage', () => {
  it('queues a message held in memory with one database round trip', async () => {
    const clock = new Clock();
    const { store } = await node(freshSchema(), clock, 'node-a');
    await store.stats(); // the pool's connection is open
    const sql = recordQueries(store);
    const id = await store.enqueue(envelope(clock, 'bob@example.com'), body(1));
    expect(sql).toHaveLength(1);
    expect(isInsert(sql[0] as string)).toBe(true);
    expect((await store.show(id))?.recipientStates.map((r) => r.address)).toEqual(['bob@example.com']);
  });

  it('commits messages arriving together in one statement (group commit)', async () => {
    const clock = new Clock();
    const { store } = await node(freshSchema(), clock, 'node-a');
    await store.stats();
    const sql = recordQueries(store);
    const ids = await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.enqueue(envelope(clock, `u${i}@example.com`), body(i))),
    );
    const inserts = sql.filter(isInsert);
    expect(inserts.length).toBeLessThanOrEqual(4);
    expect((await store.list()).map((m) => m.id).sort()).toEqual([...ids].sort());
    const shown = await store.show(ids[7] as string);
    expect(shown?.recipientStates.map((r) => r.address)).toEqual(['u7@example.com']);
    expect(shown?.headers).toBe('Subject: message 7\r\n');
  });

  it('stores quarantined messages quarantined by the statements that store them (groups mix both kinds); no node leases one until released', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const a = await node(schema, clock, 'node-a');
    const b = await node(schema, clock, 'node-b');
    await a.store.stats(); // the pool's connection is open
    const sql = recordQueries(a.store);
    const reason = { check: 'rspamd', result: 'add header' };
    // Alternating: in at most 4 statements for 10 messages, some statement carries both kinds.
    const ids = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        a.store.enqueue(
          {
            ...envelope(clock, `u${i}@example.com`),
            attributes: i % 2 === 0 ? { quarantine: reason } : {},
          },
          body(i),
        ),
      ),
    );
    expect(sql.filter(isInsert).length).toBeLessThanOrEqual(4);
    // Nothing else on the receive path (the wake-up NOTIFY goes after the answer, on its own timer).
    expect(sql.filter((x) => !isInsert(x) && !x.includes('pg_notify'))).toEqual([]);
    const quarantined = ids.filter((_, i) => i % 2 === 0);
    const ordinary = ids.filter((_, i) => i % 2 === 1);
    // A large message (chunk rows, a transaction of its own) too.
    const big = await a.store.enqueue(
      { ...envelope(clock, 'big@example.com'), attributes: { quarantine: reason } },
      Buffer.alloc(300 * 1024, 'x'),
    );
    quarantined.push(big);

    const leased = [
      ...(await a.store.leaseDue(clock.now(), 20)),
      ...(await b.store.leaseDue(clock.now(), 20)),
    ];
    expect(leased.map((l) => l.id).sort()).toEqual([...ordinary].sort());
    const listed = await b.store.list({ state: 'quarantined' });
    expect(listed.map((m) => m.id).sort()).toEqual([...quarantined].sort());
    expect(listed.every((m) => m.quarantine?.check === 'rspamd')).toBe(true);
    expect(await b.store.stats()).toMatchObject({ messages: 11, quarantined: 6, held: 0 });

    // hold and retry leave it quarantined; release (on the other node) lets it be leased.
    const q = quarantined[0] as string;
    expect(await b.store.hold(q)).toBe(true);
    expect(await b.store.retryNow(q)).toBe(true);
    expect(await a.store.leaseDue(clock.now(), 20)).toEqual([]);
    expect((await a.store.show(q))?.state).toBe('quarantined');
    expect(await b.store.release(q)).toBe(true);
    const released = await a.store.leaseDue(clock.now(), 20);
    expect(released.map((l) => [l.id, l.attributes.quarantine])).toEqual([[q, reason]]);
    const summary = (await a.store.list()).find((m) => m.id === q);
    expect([summary?.state, summary?.quarantine]).toEqual(['active', undefined]);
    expect((await a.store.stats()).quarantined).toBe(5);
  });

  it('streams a 20 MB message into chunk rows and out again, one chunk at a time', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const { store } = await node(schema, clock, 'node-a');
    const MiB = 1024 * 1024;
    const size = 20 * MiB;
    const piece = 64 * 1024;
    const octet = (i: number) => (i * 7 + (i >> 16)) & 0xff;
    let generated = 0;
    const inHash = createHash('sha256');
    const source = () =>
      new Readable({
        read() {
          if (generated >= size) {
            this.push(null);
            return;
          }
          const b = Buffer.allocUnsafe(piece);
          for (let i = 0; i < piece; i++) b[i] = octet(generated + i);
          generated += piece;
          inHash.update(b);
          this.push(b);
        },
      });
    const id = await store.enqueue(envelope(clock, 'bob@example.com'), { size, stream: source });

    const s = ident(schema);
    const { rows } = await store.pool.query(
      `SELECT count(*)::integer AS n, max(length(data))::integer AS biggest, sum(length(data))::bigint AS total,
         (SELECT body IS NULL FROM ${s}.messages WHERE id = $1) AS chunked
       FROM ${s}.message_chunks WHERE message_id = $1`,
      [id],
    );
    expect(rows[0]).toEqual({ n: 20, biggest: MiB, total: size, chunked: true });

    const [lease] = await store.leaseDue(clock.now(), 1, room(5));
    expect(lease?.size).toBe(size);
    const outHash = createHash('sha256');
    const pieces: number[] = [];
    for await (const chunk of (lease as Lease).stream()) {
      pieces.push((chunk as Buffer).length);
      outHash.update(chunk as Buffer);
    }
    expect(pieces.reduce((x, y) => x + y, 0)).toBe(size);
    expect(Math.max(...pieces)).toBeLessThanOrEqual(MiB);
    expect(outHash.digest('hex')).toBe(inHash.digest('hex'));
    const detail = await store.show(id);
    expect(detail?.size).toBe(size);
  });

  it('never hands out a message cut short: a stream that ends early fails', async () => {
    const clock = new Clock();
    const schema = freshSchema();
    const { store } = await node(schema, clock, 'node-a', { chunkSize: 1024 });
    const id = await store.enqueue(envelope(clock, 'bob@example.com'), Buffer.alloc(300 * 1024, 'x'));
    await store.pool.query(`DELETE FROM ${ident(schema)}.message_chunks WHERE message_id = $1 AND seq > 10`, [
      id,
    ]);
    const [lease] = await store.leaseDue(clock.now(), 1, room(5));
    const read = async () => {
      for await (const _ of (lease as Lease).stream());
    };
    await expect(read()).rejects.toThrow(/ends after 11264 of 307200 octets/);
  });
});
