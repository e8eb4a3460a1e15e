/**
 * The embedded policy state store: one SQLite database (Node's built-in
 * `node:sqlite`, no native addon) under the server's data directory.
 *
 * Each operation is one `INSERT ... ON CONFLICT (key) DO UPDATE ...
 * RETURNING` statement, the same single round trip a PostgreSQL store makes
 * (there `min`/`max` of two values are `LEAST`/`GREATEST`); SQLite runs it
 * atomically, and other processes opening the same file wait on its lock
 * (`busy_timeout`), so no two sessions can take the same token.
 *
 * Durability: WAL with `synchronous=NORMAL`, and group commit: the writes
 * of one event-loop turn (at most `MAX_BATCH`) share one transaction,
 * committed at the end of the turn (`setImmediate`). A commit costs a WAL
 * write, far more than the statement; under load a turn carries the writes
 * of many sessions. So a write survives the process being killed once its
 * turn is over, and a power loss takes what the last checkpoint did not
 * sync. For greylisting that costs at most a repeated delay for a few
 * triplets, and for rate limits a bucket that refills early: not worth an
 * fsync per RCPT. Both greylist entries and buckets are stored, so a
 * restart forgets neither.
 */
import { closeSync, openSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type {
  GreylistEntry,
  GreylistStatus,
  GreylistTimes,
  PolicyStateStore,
  TakeResult,
  TokenBucket,
} from '../policy/state-store.ts';
import { TOKEN_EPSILON } from '../policy/state-store.ts';

/** The schema this code writes; a database with a newer one is refused. */
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS greylist (
  key        TEXT PRIMARY KEY,
  first_seen INTEGER NOT NULL,
  passed     INTEGER NOT NULL,
  expires    INTEGER NOT NULL,
  status     TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greylist_expires ON greylist (expires);
CREATE TABLE IF NOT EXISTS rate_bucket (
  key      TEXT PRIMARY KEY,
  tokens   REAL NOT NULL,
  updated  INTEGER NOT NULL,
  expires  REAL NOT NULL,
  admitted INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rate_bucket_expires ON rate_bucket (expires);
`;

/*
 * In an upsert's SET, a bare column is the row's old value (every right-hand
 * side is evaluated before any assignment), `:now` and friends the caller's.
 * `expires <= :now`: the entry is gone (or as good as gone); start over.
 * The three CASEs share one condition: passed before, or the delay is over.
 */
const GREYLIST_SEEN = `
INSERT INTO greylist (key, first_seen, passed, expires, status)
VALUES (:key, :now, 0, :now + :window, 'new')
ON CONFLICT (key) DO UPDATE SET
  status = CASE WHEN expires <= :now THEN 'new'
                WHEN passed = 1 OR :now >= first_seen + :delay THEN 'passed'
                ELSE 'early' END,
  first_seen = CASE WHEN expires <= :now THEN :now ELSE first_seen END,
  passed = CASE WHEN expires <= :now THEN 0
                WHEN passed = 1 OR :now >= first_seen + :delay THEN 1
                ELSE 0 END,
  expires = CASE WHEN expires <= :now THEN :now + :window
                 WHEN passed = 1 OR :now >= first_seen + :delay THEN :now + :lifetime
                 ELSE expires END
RETURNING status, first_seen AS firstSeen, expires`;

/**
 * The bucket's level at `:now`: what it held, refilled for the time since
 * (one token per `:interval` ms), capped. `:enough` is `:n` less
 * `TOKEN_EPSILON`. `CAST`: whole-number values bind as INTEGER, and SQLite
 * divides integers as integers.
 */
const LEVEL = 'min(:cap, tokens + max(0, :now - updated) / CAST(:interval AS REAL))';
const AFTER = `CASE WHEN ${LEVEL} >= :enough THEN ${LEVEL} - :n ELSE ${LEVEL} END`;
/*
 * A new bucket starts full. `expires` is when it is full again: after that
 * the row says nothing an absent row would not, and `prune` may drop it.
 */
const TAKE_TOKENS = `
INSERT INTO rate_bucket (key, tokens, updated, expires, admitted)
VALUES (:key, CASE WHEN :cap >= :enough THEN :cap - :n ELSE :cap END, :now,
        :now + CASE WHEN :cap >= :enough THEN :n * :interval ELSE 0 END, :cap >= :enough)
ON CONFLICT (key) DO UPDATE SET
  admitted = ${LEVEL} >= :enough,
  tokens = ${AFTER},
  updated = max(updated, :now),
  expires = max(updated, :now) + (:cap - ${AFTER}) * :interval
RETURNING tokens, admitted`;

/**
 * The statement with its `:name` parameters numbered (`?1`, ...) in the
 * order of `names`, so it is bound by position: about half the cost of
 * binding an object by name, which is much of a statement this small.
 */
function numbered(sql: string, names: readonly string[]): string {
  return sql.replace(/:([a-z]+)/g, (_, name: string) => {
    const i = names.indexOf(name);
    if (i < 0) throw new Error(`unknown SQL parameter :${name}`);
    return `?${i + 1}`;
  });
}

const GREYLIST_PARAMS = ['key', 'now', 'delay', 'window', 'lifetime'] as const;
const TAKE_PARAMS = ['key', 'now', 'cap', 'interval', 'n', 'enough'] as const;

/** At most this many rows per DELETE, so pruning a large table never holds the event loop long. */
const PRUNE_BATCH = 5000;

/** Writes one transaction carries at most before it is committed (within a turn that makes more). */
const MAX_BATCH = 256;

export interface SqliteStoreOptions {
  /** The database file (created with mode 0600 if missing). */
  readonly path: string;
  /** How long a statement waits for another process's lock (ms). */
  readonly busyTimeout?: number;
  /** Told when a group commit fails (its writes are lost; nothing else is affected). */
  readonly onCommitError?: (err: unknown) => void;
}

export class SqlitePolicyStore implements PolicyStateStore {
  readonly description: string;
  readonly #db: DatabaseSync;
  readonly #greylist: StatementSync;
  readonly #take: StatementSync;
  readonly #prune: readonly StatementSync[];
  readonly #onCommitError: (err: unknown) => void;
  /** Writes in the open transaction. */
  #batched = 0;
  #commitScheduled = false;

  constructor(options: SqliteStoreOptions) {
    this.description = `sqlite ${options.path}`;
    // Created here first so the file (and SQLite's -wal and -shm beside it, which copy its mode) is private.
    closeSync(openSync(options.path, 'a', 0o600));
    const db = new DatabaseSync(options.path, { timeout: options.busyTimeout ?? 5000 });
    try {
      const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
      if (version > SCHEMA_VERSION)
        throw new Error(
          `${options.path} has policy state schema ${version}; this mailframe knows up to ${SCHEMA_VERSION}`,
        );
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = NORMAL');
      db.exec(`BEGIN IMMEDIATE; ${SCHEMA} PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT`);
      this.#greylist = db.prepare(numbered(GREYLIST_SEEN, GREYLIST_PARAMS));
      this.#take = db.prepare(numbered(TAKE_TOKENS, TAKE_PARAMS));
      this.#prune = ['greylist', 'rate_bucket'].map((table) =>
        db.prepare(
          `DELETE FROM ${table} WHERE key IN (SELECT key FROM ${table} WHERE expires <= :now LIMIT ${PRUNE_BATCH})`,
        ),
      );
    } catch (err) {
      db.close();
      throw err;
    }
    this.#db = db;
    this.#onCommitError = options.onCommitError ?? (() => {});
  }

  /** Run one write in the turn's transaction (opened here, committed at the end of the turn). */
  #write<T>(statement: () => T): T {
    if (!this.#db.isTransaction) this.#db.exec('BEGIN IMMEDIATE');
    try {
      return statement();
    } finally {
      if (++this.#batched >= MAX_BATCH) this.#commit();
      else if (!this.#commitScheduled) {
        this.#commitScheduled = true;
        setImmediate(() => {
          this.#commitScheduled = false;
          this.#commit();
        });
      }
    }
  }

  #commit(): void {
    this.#batched = 0;
    if (!this.#db.isOpen || !this.#db.isTransaction) return;
    try {
      this.#db.exec('COMMIT');
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      this.#onCommitError(err);
    }
  }

  async greylistSeen(key: string, now: number, times: GreylistTimes): Promise<GreylistEntry> {
    const { delay, retryWindow, lifetime } = times;
    const row = this.#write(() => this.#greylist.get(key, now, delay, retryWindow, lifetime)) as {
      status: GreylistStatus;
      firstSeen: number;
      expires: number;
    };
    return { status: row.status, firstSeen: row.firstSeen, expires: row.expires };
  }

  async takeTokens(key: string, now: number, bucket: TokenBucket, n: number): Promise<TakeResult> {
    const { capacity: cap, intervalMs: interval } = bucket;
    const enough = n - TOKEN_EPSILON;
    const row = this.#write(() => this.#take.get(key, now, cap, interval, n, enough)) as {
      tokens: number;
      admitted: number;
    };
    const allowed = row.admitted === 1;
    return {
      allowed,
      remaining: row.tokens,
      retryAfterMs: allowed ? 0 : Math.ceil((n - row.tokens) * interval),
    };
  }

  async prune(now: number): Promise<number> {
    let total = 0;
    for (const statement of this.#prune) {
      for (;;) {
        const { changes } = this.#write(() => statement.run({ now }));
        total += Number(changes);
        if (Number(changes) < PRUNE_BATCH) break;
        // Let sessions in between batches.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    return total;
  }

  /** Commit what is pending and close the database (the store is unusable afterwards). */
  close(): void {
    if (!this.#db.isOpen) return;
    this.#commit();
    this.#db.close();
  }
}
