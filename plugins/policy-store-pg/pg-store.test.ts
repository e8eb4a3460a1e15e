/**
 * The PostgreSQL policy state store: the reference semantics of the store
 * interface (the property the embedded store has, run across two nodes),
 * no over-admission when nodes race one bucket, a triplet seen on one node
 * passing on another, pruning, and the version table of its own.
 */
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { assertReferenceSemantics } from '../../test/helpers/policy-store-property.ts';
import { freshSchema, usePostgres } from '../../test/helpers/postgres.ts';
import type { GreylistTimes, TokenBucket } from '../policy/state-store.ts';
import { PgPolicyStore, POLICY_SCHEMA_VERSION } from './pg-store.ts';

const database = usePostgres();
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const T0 = Date.parse('2026-03-02T10:00:00.000Z');
const TIMES: GreylistTimes = { delay: 5 * MINUTE, retryWindow: 2 * DAY, lifetime: 35 * DAY };

let stores: PgPolicyStore[] = [];
afterEach(async () => {
  for (const s of stores) await s.close();
  stores = [];
});

/** A node: a store with a pool of its own on `schema`. */
async function node(schema: string, poolSize = 4): Promise<PgPolicyStore> {
  const store = await PgPolicyStore.open({
    connection: { connectionString: await database() },
    poolSize,
    schema,
    migrate: true,
  });
  stores.push(store);
  return store;
}

describe('the store against the reference semantics', () => {
  it('gives the same answers as greylistStep and bucketStep for any sequence, switching between two nodes', async () => {
    const schema = freshSchema();
    const nodes = [await node(schema), await node(schema)] as const;
    let i = 0;
    await assertReferenceSemantics(
      {
        current: () => nodes[i % 2] as PgPolicyStore,
        flush: () => {},
        reopen: () => {
          i++;
        },
      },
      100,
    );
  });
});

describe('two nodes on one database', () => {
  it('racing one bucket admit exactly its capacity: 50 concurrent takes of capacity 5 allow 5', async () => {
    const schema = freshSchema();
    const a = await node(schema, 10);
    const b = await node(schema, 10);
    const bucket: TokenBucket = { capacity: 5, intervalMs: DAY };
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, k) => (k % 2 === 0 ? a : b).takeTokens('hot', T0, bucket, 1)),
    );
    expect(results.filter((r) => r.allowed)).toHaveLength(5);
    const refused = results.filter((r) => !r.allowed);
    expect(refused).toHaveLength(45);
    for (const r of refused) expect(r.retryAfterMs).toBe(DAY);
  });

  it('a triplet first seen on node A is early on node B before the delay and passes on B after it', async () => {
    const schema = freshSchema();
    const a = await node(schema);
    const b = await node(schema);
    const key = '192.0.2.0/24|a@example.org|b@example.com';
    expect(await a.greylistSeen(key, T0, TIMES)).toEqual({
      status: 'new',
      firstSeen: T0,
      expires: T0 + TIMES.retryWindow,
    });
    expect((await b.greylistSeen(key, T0 + TIMES.delay - 1, TIMES)).status).toBe('early');
    expect(await b.greylistSeen(key, T0 + TIMES.delay, TIMES)).toEqual({
      status: 'passed',
      firstSeen: T0,
      expires: T0 + TIMES.delay + TIMES.lifetime,
    });
    expect((await a.greylistSeen(key, T0 + DAY, TIMES)).status).toBe('passed');
  });

  it('racing one new triplet: exactly one attempt sees it new', async () => {
    const schema = freshSchema();
    const a = await node(schema, 10);
    const b = await node(schema, 10);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, k) => (k % 2 === 0 ? a : b).greylistSeen('t', T0, TIMES)),
    );
    expect(results.filter((r) => r.status === 'new')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'early')).toHaveLength(19);
  });
});

describe('the tables', () => {
  it('prunes expired entries and full buckets only', async () => {
    const store = await node(freshSchema());
    const bucket: TokenBucket = { capacity: 2, intervalMs: MINUTE / 2 };
    await store.greylistSeen('old', T0, TIMES);
    await store.greylistSeen('young', T0 + DAY, TIMES);
    await store.takeTokens('refilled', T0, bucket, 1); // full again at T0 + 30 s
    await store.takeTokens('drained', T0 + TIMES.retryWindow, bucket, 2);
    expect(await store.prune(T0 + TIMES.retryWindow)).toBe(2);
    expect((await store.greylistSeen('young', T0 + DAY + 1, TIMES)).status).toBe('early');
    expect((await store.takeTokens('drained', T0 + TIMES.retryWindow, bucket, 1)).allowed).toBe(false);
  });

  it('have a version table of their own, migrated once by nodes starting together; a newer one is refused', async () => {
    const schema = freshSchema();
    await Promise.all([node(schema), node(schema), node(schema)]);
    const c = new pg.Client({ connectionString: await database() });
    await c.connect();
    try {
      const r = await c.query(`SELECT version FROM ${schema}.policy_state_version`);
      expect(r.rows).toEqual([{ version: POLICY_SCHEMA_VERSION }]);
      await c.query(`INSERT INTO ${schema}.policy_state_version (version) VALUES (99)`);
    } finally {
      await c.end();
    }
    await expect(node(schema)).rejects.toThrow(/at version 99, newer than this mailframe knows/);
  });

  it('commit without waiting for the WAL flush (its connections only)', async () => {
    const store = await node(freshSchema());
    const r = await store.pool.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
    expect(r.rows[0]?.synchronous_commit).toBe('off');
  });

  it('without migrate, refuses a schema that has no policy state tables', async () => {
    await expect(
      PgPolicyStore.open({
        connection: { connectionString: await database() },
        poolSize: 1,
        schema: freshSchema(),
        migrate: false,
      }),
    ).rejects.toThrow(/is at version 0, this mailframe needs 1/);
  });
});
