/**
 * The embedded policy state store: entries in memory, written behind to one
 * SQLite database (Node's built-in `node:sqlite`, no native addon) under
 * the server's data directory.
 *
 * Operations run on the in-memory entry (`greylistStep`, `bucketStep`, the
 * interface's reference semantics) and answer synchronously: a greylist or
 * rate-limit tap then keeps its hook call synchronous, and an operation
 * costs a map lookup instead of a database write. An entry not in memory is
 * read from the database once. Changed entries are written every
 * `flushIntervalMs` (default 1 s), in transactions of at most
 * `FLUSH_BATCH` rows with a turn of the event loop between them (a burst of
 * changed entries never holds the sessions up for long), and at close.
 *
 * Durability: a restart finds everything written before it (close flushes);
 * a crash loses the changes of the last interval at most, and a power loss
 * (WAL, `synchronous=NORMAL`) what the last checkpoint had not synced. For
 * greylisting that means a few triplets greylisted a second time; for rate
 * limits, buckets a little fuller than they were. Neither is worth a write
 * per RCPT, let alone an fsync.
 *
 * One process owns the file (SQLite's exclusive locking mode): a second
 * server on the same data directory is refused at start instead of
 * silently keeping state of its own. Several nodes share state through a
 * database store instead.
 */
import { closeSync, openSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import {
  type BucketRow,
  bucketStep,
  type GreylistEntry,
  type GreylistRow,
  type GreylistTimes,
  greylistStep,
  type PolicyStateStore,
  type TakeResult,
  type TokenBucket,
} from '../policy/state-store.ts';

/** The schema this code writes; a database with a newer one is refused. */
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS greylist (
  key        TEXT PRIMARY KEY,
  first_seen INTEGER NOT NULL,
  passed     INTEGER NOT NULL,
  expires    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greylist_expires ON greylist (expires);
CREATE TABLE IF NOT EXISTS rate_bucket (
  key      TEXT PRIMARY KEY,
  tokens   REAL NOT NULL,
  updated  INTEGER NOT NULL,
  expires  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rate_bucket_expires ON rate_bucket (expires);
`;

/** Rows one write-behind transaction carries at most before the event loop gets a turn. */
const FLUSH_BATCH = 2000;

/** At most this many rows per DELETE, so pruning a large table never holds the event loop long. */
const PRUNE_BATCH = 5000;

export interface SqliteStoreOptions {
  /** The database file (created with mode 0600 if missing). */
  readonly path: string;
  /** How often changed entries are written (ms, default 1000). */
  readonly flushIntervalMs?: number;
  /** Entries kept in memory beyond those not yet written (default 200,000); the least recently used go first. */
  readonly maxCached?: number;
  /** Told when a write fails; the entries stay pending and the next flush tries again. */
  readonly onFlushError?: (err: unknown) => void;
}

/** A bucket in memory: the row, and when it is full again (a full bucket is as good as none). */
interface CachedBucket extends BucketRow {
  readonly expires: number;
}

export class SqlitePolicyStore implements PolicyStateStore {
  readonly description: string;
  readonly #db: DatabaseSync;
  readonly #maxCached: number;
  readonly #onFlushError: (err: unknown) => void;
  readonly #timer: NodeJS.Timeout;
  readonly #sql: {
    readonly readGreylist: StatementSync;
    readonly writeGreylist: StatementSync;
    readonly readBucket: StatementSync;
    readonly writeBucket: StatementSync;
    readonly prune: readonly StatementSync[];
  };
  /** In least-recently-used order (a use moves an entry to the end). */
  readonly #greylist = new Map<string, GreylistRow>();
  readonly #buckets = new Map<string, CachedBucket>();
  readonly #dirtyGreylist = new Set<string>();
  readonly #dirtyBuckets = new Set<string>();
  /** A timer flush is running (it yields between batches). */
  #flushing = false;

  constructor(options: SqliteStoreOptions) {
    this.description = `sqlite ${options.path}`;
    this.#maxCached = options.maxCached ?? 200_000;
    this.#onFlushError = options.onFlushError ?? (() => {});
    // Created here first so the file (and SQLite's -wal beside it, which copies its mode) is private.
    closeSync(openSync(options.path, 'a', 0o600));
    const db = new DatabaseSync(options.path, { timeout: 0 });
    try {
      db.exec('PRAGMA locking_mode = EXCLUSIVE');
      try {
        db.exec('BEGIN IMMEDIATE');
      } catch (err) {
        throw new Error(`${options.path} is in use by another process (${(err as Error).message})`);
      }
      const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
      if (version > SCHEMA_VERSION) {
        db.exec('ROLLBACK');
        throw new Error(
          `${options.path} has policy state schema ${version}; this mailframe knows up to ${SCHEMA_VERSION}`,
        );
      }
      db.exec(`${SCHEMA} PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT`);
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = NORMAL');
      this.#sql = {
        readGreylist: db.prepare(
          'SELECT first_seen AS firstSeen, passed, expires FROM greylist WHERE key = ?',
        ),
        writeGreylist: db.prepare(
          'INSERT INTO greylist (key, first_seen, passed, expires) VALUES (?, ?, ?, ?) ' +
            'ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen, passed = excluded.passed, expires = excluded.expires',
        ),
        readBucket: db.prepare('SELECT tokens, updated, expires FROM rate_bucket WHERE key = ?'),
        writeBucket: db.prepare(
          'INSERT INTO rate_bucket (key, tokens, updated, expires) VALUES (?, ?, ?, ?) ' +
            'ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated, expires = excluded.expires',
        ),
        prune: ['greylist', 'rate_bucket'].map((table) =>
          db.prepare(
            `DELETE FROM ${table} WHERE key IN (SELECT key FROM ${table} WHERE expires <= ? LIMIT ${PRUNE_BATCH})`,
          ),
        ),
      };
    } catch (err) {
      db.close();
      throw err;
    }
    this.#db = db;
    this.#timer = setInterval(() => void this.flushInBatches(), options.flushIntervalMs ?? 1000);
    this.#timer.unref();
  }

  greylistSeen(key: string, now: number, times: GreylistTimes): GreylistEntry {
    const found = this.#greylist.get(key);
    let before: GreylistRow | undefined;
    if (found !== undefined) {
      this.#greylist.delete(key);
      before = found;
    } else {
      const row = this.#sql.readGreylist.get(key) as
        | { firstSeen: number; passed: number; expires: number }
        | undefined;
      if (row !== undefined)
        before = { firstSeen: row.firstSeen, passed: row.passed === 1, expires: row.expires };
    }
    const { row, status } = greylistStep(before, now, times);
    this.#greylist.set(key, row);
    if (row !== before) this.#dirtyGreylist.add(key);
    return { status, firstSeen: row.firstSeen, expires: row.expires };
  }

  takeTokens(key: string, now: number, bucket: TokenBucket, n: number): TakeResult {
    let before = this.#buckets.get(key);
    if (before !== undefined) this.#buckets.delete(key);
    else before = this.#sql.readBucket.get(key) as CachedBucket | undefined;
    // An expired bucket is a full one: as if there were none (and `prune` may have deleted it).
    const step = bucketStep(
      before !== undefined && before.expires > now ? before : undefined,
      now,
      bucket,
      n,
    );
    this.#buckets.set(key, { ...step.row, expires: step.expires });
    this.#dirtyBuckets.add(key);
    return step.result;
  }

  /** Write every changed entry now; then forget the least recently used beyond `maxCached`. */
  flush(): void {
    while (this.#writeBatch(Number.POSITIVE_INFINITY));
    this.#evict();
  }

  /** The timer's flush: batches of `FLUSH_BATCH` rows, the event loop running in between. */
  async flushInBatches(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#writeBatch(FLUSH_BATCH)) await new Promise((resolve) => setImmediate(resolve));
      this.#evict();
    } finally {
      this.#flushing = false;
    }
  }

  /**
   * Write up to `max` changed entries in one transaction. True when more
   * remain; false when none do, or the write failed (they stay pending,
   * and the next flush tries again).
   */
  #writeBatch(max: number): boolean {
    if (!this.#db.isOpen) return false;
    const greylist = take(this.#dirtyGreylist, max);
    const buckets = take(this.#dirtyBuckets, max - greylist.length);
    if (greylist.length === 0 && buckets.length === 0) return false;
    try {
      this.#db.exec('BEGIN');
      for (const key of greylist) {
        const row = this.#greylist.get(key);
        if (row !== undefined)
          this.#sql.writeGreylist.run(key, row.firstSeen, row.passed ? 1 : 0, row.expires);
      }
      for (const key of buckets) {
        const row = this.#buckets.get(key);
        if (row !== undefined) this.#sql.writeBucket.run(key, row.tokens, row.updated, row.expires);
      }
      this.#db.exec('COMMIT');
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      this.#onFlushError(err);
      return false;
    }
    for (const key of greylist) this.#dirtyGreylist.delete(key);
    for (const key of buckets) this.#dirtyBuckets.delete(key);
    return this.#dirtyGreylist.size > 0 || this.#dirtyBuckets.size > 0;
  }

  /** Forget the least recently used written entries beyond `maxCached`. */
  #evict(): void {
    evict(this.#greylist, this.#dirtyGreylist, this.#maxCached);
    evict(this.#buckets, this.#dirtyBuckets, this.#maxCached);
  }

  async prune(now: number): Promise<number> {
    this.flush();
    for (const [key, row] of this.#greylist) if (row.expires <= now) this.#greylist.delete(key);
    for (const [key, row] of this.#buckets) if (row.expires <= now) this.#buckets.delete(key);
    let total = 0;
    for (const statement of this.#sql.prune) {
      for (;;) {
        if (!this.#db.isOpen) return total;
        const changes = Number(statement.run(now).changes);
        total += changes;
        if (changes < PRUNE_BATCH) break;
        // Let sessions in between batches.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    return total;
  }

  /** Write what is pending and close the database (the store is unusable afterwards). */
  close(): void {
    clearInterval(this.#timer);
    if (!this.#db.isOpen) return;
    this.flush();
    this.#db.close();
  }
}

/** The first `max` keys of `set` (all of them when it has no more). */
function take(set: ReadonlySet<string>, max: number): string[] {
  const out: string[] = [];
  if (max <= 0) return out;
  for (const key of set) {
    out.push(key);
    if (out.length >= max) break;
  }
  return out;
}

/** Drop the least recently used entries of `map` beyond `max`, but none still to be written. */
function evict<V>(map: Map<string, V>, dirty: ReadonlySet<string>, max: number): void {
  let excess = map.size - max;
  for (const key of map.keys()) {
    if (excess <= 0) break;
    if (dirty.has(key)) continue;
    map.delete(key);
    excess--;
  }
}
