/**
 * Policy state: what greylisting and rate limits remember between sessions,
 * behind one small interface that several plugins share (the `policyState`
 * service) and that more than one backend implements: the embedded SQLite
 * store of the `policy-store` plugin, and the PostgreSQL store of
 * `policy-store-pg` when several nodes share one database.
 *
 * Every operation is one atomic read-modify-write of one key, so two
 * sessions (or, on a shared database, two nodes) racing on the same key can
 * never both take the last token or both open a triplet. A database store
 * implements each as a single statement (`INSERT ... ON CONFLICT (key) DO
 * UPDATE ... RETURNING`, one round trip). The caller passes `now` (the
 * server clock, so tests inject one); a store never reads a clock of its
 * own. The reference semantics are the pure functions below
 * (`greylistStep`, `bucketStep`).
 *
 * An operation answers with a value or a promise of one: a store that
 * answers from memory (the embedded one) returns the value, so the hook
 * call that asked stays synchronous, which the core makes much cheaper
 * than a promise; a remote one returns a promise. Callers handle both
 * (`andThen`).
 */
import type { PluginApi } from '../../core/plugin.ts';

/** Greylisting's three times, in milliseconds. */
export interface GreylistTimes {
  /** How long after the first attempt a retry is accepted. */
  readonly delay: number;
  /** How long after the first attempt a retry still counts; later, the triplet starts over. */
  readonly retryWindow: number;
  /** How long a passed triplet is remembered after its last use (renewed on each use). */
  readonly lifetime: number;
}

/**
 * `new`: first seen now (or seen so long ago that it starts over); `early`:
 * seen before, but the delay has not passed; `passed`: the delay passed
 * within the retry window, now or earlier.
 */
export type GreylistStatus = 'new' | 'early' | 'passed';

export interface GreylistEntry {
  readonly status: GreylistStatus;
  /** When the triplet was first seen (ms, the caller's clock). */
  readonly firstSeen: number;
  /** When the entry is forgotten unless used again (ms). */
  readonly expires: number;
}

/** A token bucket: `capacity` tokens, one more back every `intervalMs` milliseconds. */
export interface TokenBucket {
  readonly capacity: number;
  /** Milliseconds per token (`per` / `limit`): a division, so whole periods refill whole tokens exactly. */
  readonly intervalMs: number;
}

/**
 * Slack in comparing a bucket's level with what is asked: the level is a
 * float, and a refill that should give exactly one token may give 0.9999999.
 */
export const TOKEN_EPSILON = 1e-9;

export interface TakeResult {
  /** Whether the tokens were taken (a refusal takes none). */
  readonly allowed: boolean;
  /** Tokens left in the bucket afterwards. */
  readonly remaining: number;
  /** When refused: milliseconds until enough tokens are back (0 when allowed). */
  readonly retryAfterMs: number;
}

/** A value, or a promise of one. */
export type MaybePromise<T> = T | Promise<T>;

/** `f(value)`, at once for a value, after it settles for a promise: keeps a synchronous answer synchronous. */
export function andThen<T, R>(value: MaybePromise<T>, f: (value: T) => MaybePromise<R>): MaybePromise<R> {
  return value instanceof Promise ? value.then(f) : f(value);
}

export interface PolicyStateStore {
  /** What the store is, for logs (`sqlite /var/lib/mailframe/policy-state.sqlite`). */
  readonly description: string;
  /**
   * Greylisting: one attempt of `key` (a triplet) at `now`. Creates the
   * entry (`new`), leaves it as it is (`early`), or marks it passed and
   * renews it for `lifetime` (`passed`).
   */
  greylistSeen(key: string, now: number, times: GreylistTimes): MaybePromise<GreylistEntry>;
  /** Rate limits: take `n` tokens from the bucket `key` at `now`, if it holds them. */
  takeTokens(key: string, now: number, bucket: TokenBucket, n: number): MaybePromise<TakeResult>;
  /** Forget entries that expired by `now` (a full bucket is as good as none). Returns how many. */
  prune(now: number): MaybePromise<number>;
}

/**
 * What a store plugin does with its store: publish it as the `policyState`
 * service, prune expired entries every `pruneEveryMs` (one prune at a time,
 * failures logged), and on shutdown wait for a prune in flight, then close it.
 */
export function servePolicyState(
  api: Pick<PluginApi<unknown>, 'provide' | 'log' | 'server' | 'onClose'>,
  store: PolicyStateStore & { close(): MaybePromise<void> },
  pruneEveryMs: number,
): void {
  api.provide('policyState', store);
  api.log.info({ store: store.description }, 'policy state store open');
  let pruning: Promise<void> | undefined;
  const prune = () => {
    pruning ??= Promise.resolve(store.prune(api.server.clock.now()))
      .then((n) => {
        if (n > 0) api.log.debug({ removed: n }, 'policy state pruned');
      })
      .catch((err: unknown) => api.log.warn({ err }, 'policy state prune failed'))
      .finally(() => {
        pruning = undefined;
      });
  };
  const timer = setInterval(prune, pruneEveryMs);
  timer.unref();
  api.onClose(async () => {
    clearInterval(timer);
    await pruning;
    await store.close();
  });
}

declare module '../../core/plugin.ts' {
  interface Services {
    /** Shared policy state (greylisting, rate limits): the `policy-store` plugin, or a database-backed one. */
    policyState: PolicyStateStore;
  }
}

/** A greylist entry as a store keeps it. */
export interface GreylistRow {
  readonly firstSeen: number;
  readonly passed: boolean;
  readonly expires: number;
}

/** Reference semantics of `greylistSeen`: the entry after one attempt, and the answer. */
export function greylistStep(
  row: GreylistRow | undefined,
  now: number,
  times: GreylistTimes,
): { row: GreylistRow; status: GreylistStatus } {
  if (row === undefined || row.expires <= now)
    return { row: { firstSeen: now, passed: false, expires: now + times.retryWindow }, status: 'new' };
  if (row.passed || now >= row.firstSeen + times.delay)
    return {
      row: { firstSeen: row.firstSeen, passed: true, expires: now + times.lifetime },
      status: 'passed',
    };
  return { row, status: 'early' };
}

/** A token bucket as a store keeps it. */
export interface BucketRow {
  readonly tokens: number;
  readonly updated: number;
}

/** Reference semantics of `takeTokens`: the bucket after the attempt, when it is full again, and the answer. */
export function bucketStep(
  row: BucketRow | undefined,
  now: number,
  bucket: TokenBucket,
  n: number,
): { row: BucketRow; expires: number; result: TakeResult } {
  const level =
    row === undefined
      ? bucket.capacity
      : Math.min(bucket.capacity, row.tokens + Math.max(0, now - row.updated) / bucket.intervalMs);
  const allowed = level >= n - TOKEN_EPSILON;
  const tokens = allowed ? level - n : level;
  const updated = row === undefined ? now : Math.max(row.updated, now);
  return {
    row: { tokens, updated },
    expires: updated + (bucket.capacity - tokens) * bucket.intervalMs,
    result: {
      allowed,
      remaining: tokens,
      retryAfterMs: allowed ? 0 : Math.ceil((n - level) * bucket.intervalMs),
    },
  };
}
