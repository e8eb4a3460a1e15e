/**
 * The network fuzzer, briefly, as part of `npm test`: the server (every
 * bundled extension, in a child process) must survive mutated sessions from
 * a fixed seed and from a fresh random one without a crash, a hang, a failed
 * health check or runaway memory. On failure the message holds the seed and
 * a reproducer (`npm run fuzz -- --seed S --replay I`). Longer runs:
 * `npm run fuzz -- --minutes N`.
 */
import { randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { formatResult, runFuzz } from '../../scripts/fuzz/fuzz.ts';
import { generateSession } from '../../scripts/fuzz/generate.ts';
import { showSession } from '../../scripts/fuzz/session.ts';

const CONNECTIONS = 6;

describe('network fuzzer', () => {
  it('makes each session from the seed and its number alone, so a reproducer replays it exactly', () => {
    for (let i = 0; i < 50; i++) {
      expect(generateSession(42, i)).toEqual(generateSession(42, i));
      expect(showSession(generateSession(42, i))).toBe(showSession(generateSession(42, i)));
    }
    expect(generateSession(42, 1)).not.toEqual(generateSession(43, 1));
  });

  it('a fixed seed finds no crash, hang or memory growth', async () => {
    const result = await runFuzz({ seed: 20261204, durationMs: 8000, connections: CONNECTIONS });
    expect(result.fault, formatResult(result)).toBeUndefined();
    expect(result.sessions).toBeGreaterThan(0);
  }, 120_000);

  it('a random seed finds none either (the seed is in the failure message)', async () => {
    const seed = randomInt(2 ** 31);
    const result = await runFuzz({ seed, durationMs: 6000, connections: CONNECTIONS });
    expect(result.fault, formatResult(result)).toBeUndefined();
  }, 120_000);

  it('reports a server that dies as a crash, with the seed and replayable suspects', async () => {
    const result = await runFuzz({
      seed: 7,
      durationMs: 30_000,
      connections: 2,
      onServerStarted: (pid) => setTimeout(() => process.kill(pid, 'SIGKILL'), 1000),
    });
    expect(result.fault?.kind).toBe('crash');
    const report = formatResult(result);
    expect(report).toContain('seed 7');
    expect(report).toContain('the server exited (SIGKILL)');
    expect(report).toMatch(/npm run fuzz -- --seed 7 --replay \d+/);
  }, 120_000);
});
