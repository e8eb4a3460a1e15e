import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from './duration.ts';
import { parseRetryPolicy, parseRetrySchedule, planRetry, retryDelay, retryPolicyWarnings } from './retry.ts';

const M = 60_000;
const H = 60 * M;

describe('durations', () => {
  it('parses and formats', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('1h30m')).toBe(90 * M);
    expect(parseDuration(' 5D ')).toBe(5 * 24 * H);
    expect(parseDuration('5')).toBeUndefined();
    expect(parseDuration('5m x')).toBeUndefined();
    expect(parseDuration('')).toBeUndefined();
    expect(formatDuration(90 * M)).toBe('1h30m');
    expect(formatDuration(26 * H + 5 * M)).toBe('1d2h');
  });
});

describe('retry schedule', () => {
  it('reads delays and a repeated last one', () => {
    const s = parseRetrySchedule('5m, 10m, 30m, 1h, 2h, 4h, 4h...');
    expect(s.repeatLast).toBe(true);
    expect([1, 2, 3, 7, 8, 50].map((n) => retryDelay(s, n))).toEqual([
      5 * M,
      10 * M,
      30 * M,
      4 * H,
      4 * H,
      4 * H,
    ]);
  });

  it('ends a schedule without "..."', () => {
    const s = parseRetrySchedule('1m,2m');
    expect([1, 2, 3].map((n) => retryDelay(s, n))).toEqual([M, 2 * M, undefined]);
  });

  it('names the bad item', () => {
    expect(() => parseRetrySchedule('5m, , 1h')).toThrow('retry: item 2 (""): empty item');
    expect(() => parseRetrySchedule('5m, 1 hour')).toThrow(
      'retry: item 2 ("1 hour"): "1 hour" is not a duration',
    );
    expect(() => parseRetrySchedule('0s')).toThrow('at least 1s');
    expect(() => parseRetrySchedule('')).toThrow('retry: empty schedule');
  });

  it('plans retries and gives up at maxAge, with the last retry moved up to it', () => {
    const p = parseRetryPolicy({ retry: '5m, 30m...', maxAge: '1h' });
    expect(planRetry(p, { receivedAt: 0, failures: 1, now: 0 })).toEqual({ action: 'retry', at: 5 * M });
    expect(planRetry(p, { receivedAt: 0, failures: 2, now: 5 * M })).toEqual({ action: 'retry', at: 35 * M });
    expect(planRetry(p, { receivedAt: 0, failures: 3, now: 35 * M })).toEqual({ action: 'retry', at: H });
    expect(planRetry(p, { receivedAt: 0, failures: 4, now: H })).toEqual({
      action: 'give-up',
      reason: 'expired',
    });
  });

  it('defaults follow RFC 5321 4.5.4.1 and deviations are reported', () => {
    const p = parseRetryPolicy({});
    expect(p.maxAge).toBe(5 * 24 * H);
    expect(p.schedule.delays.slice(1).every((d) => d >= 30 * M)).toBe(true);
    expect(retryPolicyWarnings(p)).toEqual([]);
    expect(retryPolicyWarnings(parseRetryPolicy({ retry: '1m, 2m', maxAge: '1d' }))).toHaveLength(2);
  });
});
