/**
 * The property every `policyState` store must have: for any sequence of
 * operations it gives the answers of the reference semantics
 * (`greylistStep`, `bucketStep`). Shared by the store tests; each store
 * says what its `flush` and `reopen` steps mean (the embedded store writes
 * behind and reopens its file; a database store may switch to another node).
 */
import fc from 'fast-check';
import { expect } from 'vitest';
import {
  type BucketRow,
  bucketStep,
  type GreylistRow,
  type GreylistTimes,
  greylistStep,
  type PolicyStateStore,
  type TokenBucket,
} from '../../plugins/policy/state-store.ts';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const T0 = Date.parse('2026-03-02T10:00:00.000Z');
const TIMES: GreylistTimes = { delay: 5 * MINUTE, retryWindow: 2 * DAY, lifetime: 35 * DAY };

export interface StoreUnderTest {
  /** The store the next operation goes to. */
  current(): PolicyStateStore;
  /** Between operations: write what is pending (or nothing). */
  flush(): void | Promise<void>;
  /** Between operations: reopen the store, or switch to another one on the same state. */
  reopen(): void | Promise<void>;
}

export async function assertReferenceSemantics(subject: StoreUnderTest, numRuns = 150): Promise<void> {
  let round = 0;
  const op = fc.record({
    kind: fc.constantFrom('greylist', 'greylist', 'bucket', 'bucket', 'flush', 'reopen'),
    key: fc.constantFrom('a', 'b'),
    dt: fc.integer({ min: -2 * MINUTE, max: 3 * DAY }),
    n: fc.integer({ min: 1, max: 4 }),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.array(op, { maxLength: 40 }),
      fc.integer({ min: 1, max: 10 }),
      fc.integer({ min: 1, max: 10 * DAY }),
      async (ops, capacity, period) => {
        // Fresh keys every run: the store is one database for all runs.
        const run = `${++round}:`;
        const bucket: TokenBucket = { capacity, intervalMs: period / capacity };
        const greylist = new Map<string, GreylistRow>();
        const buckets = new Map<string, BucketRow>();
        let now = T0;
        for (const o of ops) {
          now += o.dt;
          if (o.kind === 'flush') await subject.flush();
          else if (o.kind === 'reopen') await subject.reopen();
          else if (o.kind === 'greylist') {
            const want = greylistStep(greylist.get(o.key), now, TIMES);
            greylist.set(o.key, want.row);
            const got = await subject.current().greylistSeen(run + o.key, now, TIMES);
            expect(got).toEqual({
              status: want.status,
              firstSeen: want.row.firstSeen,
              expires: want.row.expires,
            });
          } else {
            const want = bucketStep(buckets.get(o.key), now, bucket, o.n);
            buckets.set(o.key, want.row);
            const got = await subject.current().takeTokens(run + o.key, now, bucket, o.n);
            expect(got.allowed).toBe(want.result.allowed);
            expect(got.remaining).toBeCloseTo(want.result.remaining, 6);
            expect(got.retryAfterMs).toBe(want.result.retryAfterMs);
          }
        }
      },
    ),
    { numRuns },
  );
}
