import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../core/log.ts';
import { Scheduler } from './scheduler.ts';
import type { Lease } from './types.ts';

/** A store with nothing due that counts how often the scheduler looks. */
function countingStore() {
  const store = {
    looks: 0,
    async leaseDue(): Promise<Lease[]> {
      store.looks++;
      return [];
    },
    async nextDue(): Promise<number | undefined> {
      return undefined;
    },
  };
  return store;
}

function schedulerOver(store: ReturnType<typeof countingStore>): Scheduler {
  return new Scheduler({
    store,
    clock: { now: () => 0 },
    concurrency: 4,
    perDestination: 2,
    run: async () => {},
    log: silentLogger(),
  });
}

describe('Scheduler.kick', () => {
  it('folds the kicks of one event-loop turn into one look, after the turn', async () => {
    const store = countingStore();
    const scheduler = schedulerOver(store);
    for (let i = 0; i < 5; i++) scheduler.kick();
    expect(store.looks).toBe(0);
    await nextTurn();
    expect(store.looks).toBe(1);
    // A later turn's kick looks again: the fold does not stick.
    scheduler.kick();
    await nextTurn();
    expect(store.looks).toBe(2);
    await scheduler.close(0);
  });

  it('does not look once closed, even for a kick made before the close', async () => {
    const store = countingStore();
    const scheduler = schedulerOver(store);
    scheduler.kick();
    await scheduler.close(0);
    await nextTurn();
    scheduler.kick();
    await nextTurn();
    expect(store.looks).toBe(0);
  });
});
