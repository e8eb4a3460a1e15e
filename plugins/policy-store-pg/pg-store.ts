/**
 * The policy state store on PostgreSQL: greylist triplets and rate-limit
 * buckets in two tables that several nodes share, so a triplet first seen
 * on one node passes on another and a bucket admits its capacity across
 * all of them.
 *
 * Each operation is one statement, `INSERT ... ON CONFLICT (key) DO UPDATE
 * ... RETURNING`: the row lock the conflict takes makes it atomic, so two
 * nodes racing one bucket never both take its last token. The statements
 * compute what `greylistStep` and `bucketStep` compute (the same float8
 * arithmetic in the same order); the row keeps the outcome of the last
 * operation (`status`, `allowed`), since RETURNING sees only the new row.
 *
 * The tables have a version table of their own (`policy_state_version`),
 * beside the queue's in the same schema: the queue and the policy state
 * migrate independently, and a node that keeps no policy state here never
 * sees its version.
 */
import pg from 'pg';
import {
  type GreylistEntry,
  type GreylistStatus,
  type GreylistTimes,
  type PolicyStateStore,
  type TakeResult,
  TOKEN_EPSILON,
  type TokenBucket,
} from '../policy/state-store.ts';
import { ident } from '../queue-pg/migrations.ts';

/** The policy state schema this code writes; a database at a newer one is refused. */
export const POLICY_SCHEMA_VERSION = 1;

const MIGRATIONS: ReadonlyArray<(s: string) => string> = [
  (s) => `
CREATE TABLE ${s}.policy_greylist (
  key text PRIMARY KEY,
  first_seen bigint NOT NULL,
  passed boolean NOT NULL,
  expires bigint NOT NULL,
  -- The answer of the last attempt (RETURNING sees only the new row).
  status text NOT NULL
);
CREATE INDEX policy_greylist_expires ON ${s}.policy_greylist (expires);
CREATE TABLE ${s}.policy_bucket (
  key text PRIMARY KEY,
  tokens float8 NOT NULL,
  updated bigint NOT NULL,
  -- When the bucket is full again: a full bucket is as good as none.
  expires float8 NOT NULL,
  -- Whether the last attempt took its tokens.
  allowed boolean NOT NULL
);
CREATE INDEX policy_bucket_expires ON ${s}.policy_bucket (expires);
`,
];

export class NewerPolicySchemaError extends Error {
  readonly code = 'ESCHEMANEWER';
  constructor(schema: string, found: number) {
    super(
      `the policy state in schema "${schema}" is at version ${found}, newer than this mailframe knows (${POLICY_SCHEMA_VERSION})`,
    );
  }
}

/** Bring the policy state tables of `schema` up to date (under an advisory lock: nodes starting together). */
export async function migratePolicyState(pool: pg.Pool, schema: string): Promise<number[]> {
  const s = ident(schema);
  const lock = `hashtextextended('mailframe-policy-migrate/' || $1, 0)`;
  const client = await pool.connect();
  try {
    await client.query(`SELECT pg_advisory_lock(${lock})`, [schema]);
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${s}.policy_state_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const r = await client.query<{ version: number | null }>(
        `SELECT max(version)::int AS version FROM ${s}.policy_state_version`,
      );
      const found = r.rows[0]?.version ?? 0;
      if (found > POLICY_SCHEMA_VERSION) throw new NewerPolicySchemaError(schema, found);
      const applied: number[] = [];
      for (let v = found + 1; v <= POLICY_SCHEMA_VERSION; v++) {
        await client.query('BEGIN');
        try {
          await client.query((MIGRATIONS[v - 1] as (s: string) => string)(s));
          await client.query(`INSERT INTO ${s}.policy_state_version (version) VALUES ($1)`, [v]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
        applied.push(v);
      }
      return applied;
    } finally {
      await client.query(`SELECT pg_advisory_unlock(${lock})`, [schema]);
    }
  } finally {
    client.release();
  }
}

/** greylistSeen: $1 key, $2 now, $3 delay, $4 retryWindow, $5 lifetime. */
function greylistSql(s: string): string {
  const now = '$2::bigint';
  const expired = `g.expires <= ${now}`;
  const passes = `(g.passed OR ${now} >= g.first_seen + $3::bigint)`;
  return `INSERT INTO ${s}.policy_greylist AS g (key, first_seen, passed, expires, status)
VALUES ($1, ${now}, false, ${now} + $4::bigint, 'new')
ON CONFLICT (key) DO UPDATE SET
  first_seen = CASE WHEN ${expired} THEN ${now} ELSE g.first_seen END,
  passed = CASE WHEN ${expired} THEN false ELSE ${passes} END,
  expires = CASE WHEN ${expired} THEN ${now} + $4::bigint WHEN ${passes} THEN ${now} + $5::bigint ELSE g.expires END,
  status = CASE WHEN ${expired} THEN 'new' WHEN ${passes} THEN 'passed' ELSE 'early' END
RETURNING first_seen::float8 AS "firstSeen", expires::float8 AS expires, status`;
}

/** takeTokens: $1 key, $2 now, $3 capacity, $4 intervalMs, $5 n. */
function bucketSql(s: string): string {
  const now = '$2::bigint';
  const cap = '$3::float8';
  const interval = '$4::float8';
  const n = '$5::float8';
  const fits = (level: string) => `(${level} >= ${n} - ${TOKEN_EPSILON})`;
  const after = (level: string) => `CASE WHEN ${fits(level)} THEN ${level} - ${n} ELSE ${level} END`;
  // The level before the attempt: an expired bucket is a full one.
  const level = `(CASE WHEN b.expires <= ${now} THEN ${cap} ELSE LEAST(${cap}, b.tokens + GREATEST(0, ${now} - b.updated)::float8 / ${interval}) END)`;
  const updated = `(CASE WHEN b.expires <= ${now} THEN ${now} ELSE GREATEST(b.updated, ${now}) END)`;
  return `INSERT INTO ${s}.policy_bucket AS b (key, tokens, updated, expires, allowed)
VALUES ($1, ${after(cap)}, ${now}, ${now} + (${cap} - (${after(cap)})) * ${interval}, ${fits(cap)})
ON CONFLICT (key) DO UPDATE SET
  tokens = ${after(level)},
  updated = ${updated},
  expires = ${updated} + (${cap} - (${after(level)})) * ${interval},
  allowed = ${fits(level)}
RETURNING tokens, allowed`;
}

export interface PgPolicyStoreOptions {
  /** node-postgres connection settings. */
  readonly connection: pg.PoolConfig;
  /** Connections in the pool. */
  readonly poolSize: number;
  /** The schema holding the tables (queue-pg's, by default). */
  readonly schema: string;
  /** Apply the policy state migration at open (else refuse unless current). */
  readonly migrate: boolean;
  /** Told when an idle pooled connection breaks (the pool reconnects). */
  readonly onPoolError?: (err: unknown) => void;
}

export class PgPolicyStore implements PolicyStateStore {
  readonly description: string;
  readonly pool: pg.Pool;
  readonly #greylistSql: string;
  readonly #bucketSql: string;
  readonly #pruneSql: readonly string[];
  /** Names of the prepared statements (each connection parses and plans them once). */
  readonly #names: { readonly greylist: string; readonly bucket: string };

  private constructor(opts: PgPolicyStoreOptions) {
    const s = ident(opts.schema);
    // No WAL flush to wait for (a startup option of each connection, so no extra round trip): a database
    // crash may forget the last moments of policy state (a triplet greylisted again, a bucket a little
    // fuller), never corrupt it; the embedded store may lose up to its flush interval.
    const options = [opts.connection.options, '-c synchronous_commit=off'].filter(Boolean).join(' ');
    this.pool = new pg.Pool({ ...opts.connection, options, max: opts.poolSize });
    this.pool.on('error', opts.onPoolError ?? (() => {}));
    this.description = `postgresql schema ${opts.schema}`;
    this.#names = { greylist: `policy-greylist/${opts.schema}`, bucket: `policy-bucket/${opts.schema}` };
    this.#greylistSql = greylistSql(s);
    this.#bucketSql = bucketSql(s);
    this.#pruneSql = ['policy_greylist', 'policy_bucket'].map(
      (t) => `DELETE FROM ${s}.${t} WHERE expires <= $1`,
    );
  }

  static async open(opts: PgPolicyStoreOptions): Promise<PgPolicyStore> {
    const store = new PgPolicyStore(opts);
    try {
      if (opts.migrate) await migratePolicyState(store.pool, opts.schema);
      else await store.check(opts.schema);
      return store;
    } catch (err) {
      await store.pool.end().catch(() => {});
      throw err;
    }
  }

  /** Refuse a schema whose policy state tables are missing or at another version. */
  async check(schema: string): Promise<void> {
    const s = ident(schema);
    const t = await this.pool.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [
      `${s}.policy_state_version`,
    ]);
    let found = 0;
    if (t.rows[0]?.present) {
      const r = await this.pool.query<{ version: number | null }>(
        `SELECT max(version)::int AS version FROM ${s}.policy_state_version`,
      );
      found = r.rows[0]?.version ?? 0;
    }
    if (found > POLICY_SCHEMA_VERSION) throw new NewerPolicySchemaError(schema, found);
    if (found < POLICY_SCHEMA_VERSION)
      throw new Error(
        `the policy state in schema "${schema}" is at version ${found}, this mailframe needs ${POLICY_SCHEMA_VERSION}: set "migrate": true`,
      );
  }

  greylistSeen(key: string, now: number, times: GreylistTimes): Promise<GreylistEntry> {
    return this.pool
      .query<{ firstSeen: number; expires: number; status: GreylistStatus }>({
        name: this.#names.greylist,
        text: this.#greylistSql,
        values: [key, now, times.delay, times.retryWindow, times.lifetime],
      })
      .then(({ rows }) => {
        const row = rows[0];
        if (row === undefined) throw new Error('greylist upsert returned no row');
        return { status: row.status, firstSeen: row.firstSeen, expires: row.expires };
      });
  }

  takeTokens(key: string, now: number, bucket: TokenBucket, n: number): Promise<TakeResult> {
    return this.pool
      .query<{ tokens: number; allowed: boolean }>({
        name: this.#names.bucket,
        text: this.#bucketSql,
        values: [key, now, bucket.capacity, bucket.intervalMs, n],
      })
      .then(({ rows }) => {
        const row = rows[0];
        if (row === undefined) throw new Error('bucket upsert returned no row');
        // Refused, the level is what is left; the wait is computed as bucketStep does.
        return {
          allowed: row.allowed,
          remaining: row.tokens,
          retryAfterMs: row.allowed ? 0 : Math.ceil((n - row.tokens) * bucket.intervalMs),
        };
      });
  }

  async prune(now: number): Promise<number> {
    let total = 0;
    for (const sql of this.#pruneSql) total += (await this.pool.query(sql, [now])).rowCount ?? 0;
    return total;
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}
