/**
 * `bench/policy-store.ts --store pg`: the operations per second of the
 * PostgreSQL policy state store, `concurrency` operations in flight (as
 * many sessions of one node would have), one statement each.
 */

import { randomBytes } from 'node:crypto';
import { PgPolicyStore } from '../plugins/policy-store-pg/pg-store.ts';
import { startEmbeddedPostgres } from '../test/helpers/embedded-postgres.ts';

/** MAILFRAME_BENCH_PG_URL's database, or a throwaway embedded server with default (durable) settings. */
async function database(): Promise<{ url: string; close(): Promise<void> }> {
  const given = process.env['MAILFRAME_BENCH_PG_URL'];
  if (given) return { url: given, close: async () => {} };
  return startEmbeddedPostgres({ prefix: 'mailframe-bench-policy-pg-' });
}

export async function benchPg(ops: number, concurrency: number): Promise<void> {
  const DAY = 86_400_000;
  const times = { delay: 300_000, retryWindow: 2 * DAY, lifetime: 35 * DAY };
  const bucket = { capacity: 1e9, intervalMs: 1 };
  const WORKING_SET = 10_000;
  const db = await database();
  const store = await PgPolicyStore.open({
    connection: { connectionString: db.url },
    poolSize: concurrency,
    schema: `bench_${randomBytes(4).toString('hex')}`,
    migrate: true,
  });
  const triplet = (i: number) => `192.0.${i % 256}.0/24|sender${i}@example.org|rcpt${i % 97}@example.com`;
  /** `ops` operations, `concurrency` at a time. */
  const run = async (op: (i: number) => Promise<unknown>): Promise<number> => {
    let next = 0;
    const start = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < ops) await op(next++);
      }),
    );
    return Number(process.hrtime.bigint() - start);
  };
  const measure = async (name: string, op: (i: number) => Promise<unknown>) => {
    const ns = await run(op);
    console.log(
      `${name.padEnd(30)} ${Math.round(ops / (ns / 1e9))
        .toLocaleString('en')
        .padStart(
          10,
        )} ops/s   ${(ns / ops / 1000).toFixed(1).padStart(7)} µs/op (wall, ${concurrency} in flight)`,
    );
  };
  try {
    let now = Date.parse('2026-03-02T10:00:00Z');
    await run((i) => store.greylistSeen(triplet(i % WORKING_SET), now, times));
    now += times.delay;
    console.log(`node ${process.version}, PostgreSQL store, ${ops.toLocaleString('en')} operations per case`);
    await measure('greylistSeen, known triplets', (i) =>
      store.greylistSeen(triplet(i % WORKING_SET), now + i, times),
    );
    await measure('greylistSeen, new triplets', (i) => store.greylistSeen(`new|${i}`, now + i, times));
    await measure('takeTokens, known buckets', (i) =>
      store.takeTokens(`b${i % WORKING_SET}`, now + i, bucket, 1),
    );
    await measure('takeTokens, new buckets', (i) => store.takeTokens(`nb${i}`, now + i, bucket, 1));
    await measure('takeTokens, one hot bucket', () => store.takeTokens('hot', now, bucket, 1));
  } finally {
    await store.close();
    await db.close();
  }
}
