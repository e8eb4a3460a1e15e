/**
 * The retry schedule: a small DSL for when to try again, and when to give up.
 *
 *   "5m, 30m, 1h, 2h, 4h..."   wait 5 minutes after the first failed attempt,
 *                              30 after the second, ... and 4 hours after every
 *                              further one (`...` repeats the last delay).
 *
 * Without `...` the schedule ends: once every listed delay has been used, the
 * next failure is final. Independently, a message older than `maxAge` is given
 * up (RFC 5321 4.5.4.1: at least 4-5 days). The last retry is moved up to the
 * give-up time so the final attempt happens right at `maxAge`.
 */
import { formatDuration, requireDuration } from './duration.ts';

/** RFC 5321 4.5.4.1 defaults: a first retry after minutes, then at least 30 minutes apart, 5 days. */
export const DEFAULT_RETRY = '5m, 30m, 1h, 2h, 4h...';
export const DEFAULT_MAX_AGE = '5d';

export interface RetrySchedule {
  /** Delay after the 1st, 2nd, ... failed attempt, in ms. */
  readonly delays: readonly number[];
  /** The last delay repeats for ever (until `maxAge`). */
  readonly repeatLast: boolean;
}

export interface RetryPolicy {
  readonly schedule: RetrySchedule;
  /** Give up on a recipient once the message is this old (ms). */
  readonly maxAge: number;
  /** Send a DELAY notification once the message is this old (ms), if set. */
  readonly delayWarning: number | undefined;
}

const MIN_DELAY = 1000;

/** Parse `"5m, 30m, 1h..."`. Throws an Error whose message names the setting and the bad item. */
export function parseRetrySchedule(text: string, setting = 'retry'): RetrySchedule {
  const items = text.split(',').map((s) => s.trim());
  if (items.length === 0 || items.every((s) => s === '')) {
    throw new Error(`${setting}: empty schedule (write e.g. "${DEFAULT_RETRY}")`);
  }
  let repeatLast = false;
  const delays: number[] = [];
  for (const [i, raw] of items.entries()) {
    let item = raw;
    const where = `${setting}: item ${i + 1} ("${raw}")`;
    if (item === '') throw new Error(`${where}: empty item (two commas in a row?)`);
    const ellipsis = /(\.\.\.|…)$/.exec(item);
    if (ellipsis) {
      if (i !== items.length - 1) throw new Error(`${where}: only the last delay may end with "..."`);
      repeatLast = true;
      item = item.slice(0, -ellipsis[0].length).trim();
    }
    const ms = requireDuration(item, where);
    if (ms < MIN_DELAY) throw new Error(`${where}: a retry delay must be at least 1s`);
    delays.push(ms);
  }
  return Object.freeze({ delays: Object.freeze(delays), repeatLast });
}

/** Delay after the `failures`-th failed attempt (1-based), or undefined when the schedule is used up. */
export function retryDelay(schedule: RetrySchedule, failures: number): number | undefined {
  const i = Math.max(1, failures) - 1;
  if (i < schedule.delays.length) return schedule.delays[i];
  return schedule.repeatLast ? schedule.delays[schedule.delays.length - 1] : undefined;
}

export interface RetryOptions {
  readonly retry?: string;
  readonly maxAge?: string;
  readonly delayWarning?: string | undefined;
}

/** Validate and parse the three settings; errors name the setting (for config validation at start-up). */
export function parseRetryPolicy(opts: RetryOptions): RetryPolicy {
  const schedule = parseRetrySchedule(opts.retry ?? DEFAULT_RETRY);
  const maxAge = requireDuration(opts.maxAge ?? DEFAULT_MAX_AGE, 'maxAge');
  if (maxAge < MIN_DELAY) throw new Error('maxAge: must be at least 1s');
  const delayWarning =
    opts.delayWarning === undefined ? undefined : requireDuration(opts.delayWarning, 'delayWarning');
  if (delayWarning !== undefined && delayWarning >= maxAge) {
    throw new Error(
      `delayWarning: ${opts.delayWarning} is not shorter than maxAge ${formatDuration(maxAge)}: the warning would never be sent`,
    );
  }
  return Object.freeze({ schedule, maxAge, delayWarning });
}

/** Deviations from RFC 5321 4.5.4.1 worth a warning in the log (allowed: tests and special setups need them). */
export function retryPolicyWarnings(policy: RetryPolicy): string[] {
  const out: string[] = [];
  const later = policy.schedule.delays.slice(1);
  if (later.some((d) => d < 30 * 60_000)) {
    out.push('retry: RFC 5321 4.5.4.1 asks for retries at least 30 minutes apart after the first');
  }
  if (policy.maxAge < 4 * 86_400_000) {
    out.push('maxAge: RFC 5321 4.5.4.1 asks to keep trying for at least 4-5 days');
  }
  return out;
}

export type RetryDecision =
  | { readonly action: 'retry'; readonly at: number }
  | { readonly action: 'give-up'; readonly reason: 'expired' | 'schedule-exhausted' };

/** After a failed attempt: when to try again, or give up. `failures` counts this attempt. */
export function planRetry(
  policy: RetryPolicy,
  state: { readonly receivedAt: number; readonly failures: number; readonly now: number },
): RetryDecision {
  const expiresAt = state.receivedAt + policy.maxAge;
  if (state.now >= expiresAt) return { action: 'give-up', reason: 'expired' };
  const delay = retryDelay(policy.schedule, state.failures);
  if (delay === undefined) return { action: 'give-up', reason: 'schedule-exhausted' };
  return { action: 'retry', at: Math.min(state.now + delay, expiresAt) };
}

/** Whether a deferred recipient is due a DELAY notification now. */
export function delayWarningDue(policy: RetryPolicy, receivedAt: number, now: number): boolean {
  return policy.delayWarning !== undefined && now - receivedAt >= policy.delayWarning;
}
