/**
 * deliver-mx's connection pool bookkeeping without connections: slot limits,
 * slow start, back-off, and forgetting destinations nobody uses.
 */
import { describe, expect, it } from 'vitest';
import { ConnectionPool, type PoolLimits } from '../../plugins/deliver-mx/pool.ts';

const LIMITS: PoolLimits = {
  perDestination: 3,
  total: 10,
  initialConcurrency: 1,
  maxMessagesPerConnection: 100,
  idleTimeout: 1000,
  maxIdle: 10,
  failureThreshold: 2,
  backoff: 60_000,
  rateDelay: 0,
};

function pool(limits: Partial<PoolLimits> = {}) {
  let now = 1_000_000;
  const p = new ConnectionPool({ ...LIMITS, ...limits }, { now: () => now });
  return { p, advance: (ms: number) => (now += ms) };
}

describe('deliver-mx connection pool', () => {
  it('starts a destination with initialConcurrency slots and grows by one per connection opened', async () => {
    const { p } = pool();
    expect(await p.take('a.example')).toEqual({ kind: 'slot' });
    let second = false;
    const waiting = p.take('a.example').then((t) => {
      second = true;
      return t;
    });
    await new Promise((r) => setImmediate(r));
    expect(second).toBe(false);
    p.opened('a.example');
    expect(await waiting).toEqual({ kind: 'slot' });
    await p.close();
  });

  it('marks a destination dead after failureThreshold failures, until the back-off is over', async () => {
    const { p, advance } = pool({ initialConcurrency: 3 });
    await p.take('a.example');
    p.failed('a.example', true);
    await p.take('a.example');
    p.failed('a.example', true);
    expect(await p.take('a.example')).toEqual({ kind: 'dead', until: 1_060_000 });
    advance(60_000);
    expect(await p.take('a.example')).toEqual({ kind: 'slot' });
    await p.close();
  });

  it('forgets destinations with nothing open, nobody waiting and no back-off running', async () => {
    const { p, advance } = pool({ failureThreshold: 1 });
    await p.take('a.example');
    await p.take('b.example');
    p.sweep();
    expect(p.destinations).toBe(2);
    p.failed('a.example', false);
    p.failed('b.example', true);
    p.sweep();
    // a.example is forgotten; b.example is dead and remembered until its back-off ends.
    expect(p.destinations).toBe(1);
    advance(60_000);
    p.sweep();
    expect(p.destinations).toBe(0);
    await p.close();
  });
});
