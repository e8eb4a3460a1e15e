import { afterEach, describe, expect, it } from 'vitest';
import { IdleSweep } from '../../core/idle-sweep.ts';

let sweeps: IdleSweep[] = [];
afterEach(() => {
  for (const s of sweeps) s.stop();
  sweeps = [];
});

function sweep(shortest: number, fn: (now: number) => void = () => {}): IdleSweep {
  const s = new IdleSweep(shortest, fn);
  sweeps.push(s);
  return s;
}

describe('IdleSweep', () => {
  it('sweeps at a quarter of the shortest timeout, between 25 ms and 1 s', () => {
    expect(sweep(300_000).interval).toBe(1000);
    expect(sweep(2000).interval).toBe(500);
    expect(sweep(40).interval).toBe(25);
  });

  it('adds one interval to every deadline, for the time its clock may lag', () => {
    const s = sweep(400);
    expect(s.deadline(400) - s.now).toBeCloseTo(400 + s.interval, 6);
    expect(s.deadline(0) - s.now).toBeCloseTo(s.interval, 6);
  });

  it('calls the sweep with a fresh clock while started, and not after stop', async () => {
    const seen: number[] = [];
    const s = sweep(100, (now) => seen.push(now));
    s.start();
    s.start(); // idempotent
    await new Promise((r) => setTimeout(r, 140));
    const count = seen.length;
    expect(count).toBeGreaterThanOrEqual(1);
    expect(s.now).toBe(seen.at(-1));
    s.stop();
    await new Promise((r) => setTimeout(r, 80));
    expect(seen.length).toBe(count);
  });
});
