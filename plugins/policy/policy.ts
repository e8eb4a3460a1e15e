/**
 * Check results on the transaction: "checks report, policy decides".
 *
 * A check (SPF, DKIM, DMARC, a custom one) records what it found with
 * `recordResult`; later plugins (DMARC, the Authentication-Results header, a
 * spam scorer) read it back with `resultsOf`, fully typed. Each check names its
 * result type by declaration merging on `PolicyChecks`:
 *
 *   declare module 'mailframe/policy' {
 *     interface PolicyChecks { 'helo-fqdn': CheckResult }
 *   }
 *
 * The results live in `tx.notes.policy`, so they end with the transaction.
 */
import type { Transaction } from '../../core/types.ts';

/** The result values of RFC 8601 section 2.7 shared by every check. */
const RESULT_VALUES = ['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror'] as const;
export type ResultValue = (typeof RESULT_VALUES)[number];

/** `value` if it is one of the seven result values (`temperr` is an old spelling of `temperror`). */
export function asResultValue(value: string): ResultValue | undefined {
  if (value === 'temperr') return 'temperror';
  return (RESULT_VALUES as readonly string[]).includes(value) ? (value as ResultValue) : undefined;
}

/** What a check found. Checks extend it with their own details. */
export interface CheckResult {
  readonly result: ResultValue;
  /** Why, for people: the `reason=` of Authentication-Results and the log. Never a client reply. */
  readonly reason?: string;
  /**
   * RFC 8601 `ptype.property=value` pairs the header shows, e.g.
   * `{ 'smtp.mailfrom': 'bounce.example.org' }`.
   */
  readonly properties?: Readonly<Record<string, string>>;
  /** The Authentication-Results method (default: the check's name). */
  readonly method?: string;
}

/**
 * Every check's name and result type (extend by declaration merging). A check
 * may record several results (one per DKIM signature, say).
 */
// biome-ignore lint/suspicious/noEmptyInterface: extended by checks through declaration merging
export interface PolicyChecks {}

export type CheckName = keyof PolicyChecks & string;

/** One recorded result with the check that made it (narrow on `check` with `resultsOf`). */
export interface RecordedResult {
  readonly check: string;
  readonly result: CheckResult;
}

/** What a policy action set aside for the transaction (see `actions.ts`). */
export interface Quarantine {
  readonly check: string;
  /** The result value, or the verdict of a check with verdicts of its own (rspamd's `add header`). */
  readonly result: string;
}

/** The transaction's policy state. */
export interface PolicyNotes {
  /** In the order the checks recorded them, or reserved their place (`reserveResult`). */
  readonly results: RecordedResult[];
  /** The place of each entry of `results` (the order checks took theirs). */
  readonly places: number[];
  /** The next place to hand out. */
  next: number;
  /** Set when an action said `quarantine` (the first one wins). */
  quarantine?: Quarantine;
}

declare module '../../core/types.ts' {
  interface TransactionNotes {
    /** Check results and policy decisions (`mailframe/policy`). */
    policy?: PolicyNotes;
  }
  interface EnvelopeAttributes {
    /**
     * A policy action asked for the message to be quarantined: which check and
     * result. Travels with the message so delivery can file it apart.
     */
    quarantine?: { check: string; result: string };
  }
}

/** The transaction's policy state, created on first use. */
export function policyNotes(tx: Transaction): PolicyNotes {
  tx.notes.policy ??= { results: [], places: [], next: 0 };
  return tx.notes.policy;
}

/** Record what `check` found for this transaction. */
export function recordResult<K extends CheckName>(
  tx: Transaction,
  check: K,
  result: PolicyChecks[K] & CheckResult,
): void {
  const notes = policyNotes(tx);
  notes.results.push({ check, result });
  notes.places.push(notes.next++);
}

/**
 * Take `check`'s place among the results now, for a check that starts now and
 * reports later (SPF starts at MAIL FROM and records at the message): its
 * result then comes where it started, not where it finished, in `allResults`
 * and the Authentication-Results field. Call the returned function once, with
 * the result; until then the check has no result.
 */
export function reserveResult<K extends CheckName>(
  tx: Transaction,
  check: K,
): (result: PolicyChecks[K] & CheckResult) => void {
  const notes = policyNotes(tx);
  const place = notes.next++;
  return (result) => {
    let i = notes.places.length;
    while (i > 0 && (notes.places[i - 1] as number) > place) i--;
    notes.results.splice(i, 0, { check, result });
    notes.places.splice(i, 0, place);
  };
}

/** The results `check` recorded, in order (empty when it did not run). */
export function resultsOf<K extends CheckName>(tx: Transaction, check: K): readonly PolicyChecks[K][] {
  const out: PolicyChecks[K][] = [];
  for (const r of tx.notes.policy?.results ?? []) {
    if (r.check === check) out.push(r.result as PolicyChecks[K]);
  }
  return out;
}

/** Every result recorded on the transaction, in the order recorded. */
export function allResults(tx: Transaction): readonly RecordedResult[] {
  return tx.notes.policy?.results ?? [];
}

export * from './actions.ts';
export * from './message-header.ts';
export * from './state-store.ts';
