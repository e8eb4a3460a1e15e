/**
 * The tap wrappers' shared timeout (core/deadlines.ts): one timer for every
 * pending call of one timeout length. A call that answers in time gets its
 * answer, one that overruns gets TIMED_OUT, and neither outcome leaks into
 * the other or lingers in the list.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Deadlines, TIMED_OUT } from '../../core/deadlines.ts';

const MODULE = fileURLToPath(new URL('../../core/deadlines.ts', import.meta.url));

/** Run `body` in a fresh Node process with `Deadlines` and `TIMED_OUT` imported; its output and exit status. */
function inProcess(body: string): { stdout: string; status: number | null } {
  const script = `import { Deadlines, TIMED_OUT } from ${JSON.stringify(MODULE)};\n${body}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { stdout: r.stdout, status: r.status };
}

const never = () => new Promise<never>(() => {});

function later<T>(ms: number, value: T): Promise<T> {
  return new Promise((r) => setTimeout(r, ms, value));
}

describe('Deadlines', () => {
  it('settles with the answer when it comes first, and forgets the call', async () => {
    const d = new Deadlines(10_000);
    await expect(d.within(Promise.resolve('ok'))).resolves.toBe('ok');
    await expect(d.within(later(5, 42))).resolves.toBe(42);
    expect(d.size).toBe(0);
  });

  it('passes a rejection on', async () => {
    const d = new Deadlines(10_000);
    await expect(d.within(Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(d.size).toBe(0);
  });

  it('settles a call that never answers with TIMED_OUT', async () => {
    const d = new Deadlines(20);
    await expect(d.within(never())).resolves.toBe(TIMED_OUT);
    expect(d.size).toBe(0);
  });

  it('ignores an answer that comes after the timeout', async () => {
    const d = new Deadlines(20);
    let settle: (v: string) => void = () => {};
    const slow = new Promise<string>((r) => {
      settle = r;
    });
    await expect(d.within(slow)).resolves.toBe(TIMED_OUT);
    settle('too late');
    await slow;
    expect(d.size).toBe(0);
  });

  it('times out only the calls that overrun, among many in flight with one timer', async () => {
    // The deadlines' clock is the test's: real timers only decide when the sweep looks.
    let now = 0;
    const d = new Deadlines(50, () => now);
    const calls = Array.from({ length: 30 }, (_, i) =>
      i % 3 === 0 ? d.within(never()) : d.within(Promise.resolve(i)),
    );
    // A call that starts later gets its own full timeout, even when it joins a sweep already armed.
    now = 25;
    const late = d.within(never());
    let answer: (v: string) => void = () => {};
    const lateAnswer = d.within(
      new Promise<string>((r) => {
        answer = r;
      }),
    );
    now = 50;
    const results = await Promise.all(calls);
    expect(results).toEqual(Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? TIMED_OUT : i)));
    expect(d.size).toBe(2);
    answer('late');
    await expect(lateAnswer).resolves.toBe('late');
    now = 75;
    await expect(late).resolves.toBe(TIMED_OUT);
    expect(d.size).toBe(0);
  });

  it('does not time a call out before its deadline on its clock: an early sweep re-arms', async () => {
    let now = 0;
    const d = new Deadlines(20, () => now);
    let outcome: unknown = 'pending';
    void d.within(never()).then((v) => {
      outcome = v;
    });
    // The timer fires after 20 ms of real time, but the clock says no time passed: not due yet.
    await later(60, undefined);
    expect(outcome).toBe('pending');
    expect(d.size).toBe(1);
    now = 20;
    await later(60, undefined);
    expect(outcome).toBe(TIMED_OUT);
    expect(d.size).toBe(0);
  });

  it('keeps a call pending under a timeout longer than setTimeout allows (2^31 - 1 ms), without warnings', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const d = new Deadlines(2 ** 31 + 1000);
      let outcome: unknown = 'pending';
      void d.within(never()).then((v) => {
        outcome = v;
      });
      await later(50, undefined);
      expect(outcome).toBe('pending');
      expect(d.size).toBe(1);
      expect(warnings.map((w) => w.name)).not.toContain('TimeoutOverflowWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('keeps the process alive while a call is pending, and not once none is', () => {
    // As a timer per call did: the process waits for the timeout of a call nobody answers.
    const hung = inProcess(
      `new Deadlines(200).within(new Promise(() => {})).then((v) => console.log(v === TIMED_OUT ? 'timed out' : 'answered'));`,
    );
    expect(hung).toEqual({ stdout: 'timed out\n', status: 0 });
    // An answered call leaves the shared timer armed (for a minute here), but it holds nothing up.
    const answered = inProcess(
      `new Deadlines(60_000).within(Promise.resolve(1)).then((v) => console.log('answered', v));`,
    );
    expect(answered).toEqual({ stdout: 'answered 1\n', status: 0 });
  });
});
