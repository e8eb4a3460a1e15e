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

/** A store holding `due` jobs that hands out up to `limit` a look and counts the looks. */
function dueStore(due: number) {
  const lease = (i: number): Lease => ({
    id: `m${i}`,
    destination: 'example.com',
    from: '',
    attributes: {},
    receivedAt: 0,
    size: 1,
    recipients: [],
    stream: () => {
      throw new Error('not read here');
    },
  });
  const waiting = Array.from({ length: due }, (_, i) => lease(i));
  const store = {
    looks: 0,
    async leaseDue(_now: number, limit: number): Promise<Lease[]> {
      store.looks++;
      return waiting.splice(0, limit);
    },
    async nextDue(): Promise<number | undefined> {
      return undefined;
    },
  };
  return store;
}

describe('Scheduler looks', () => {
  it('asks the store once when it gets fewer jobs than it has room for', async () => {
    const store = dueStore(2);
    const ran: string[] = [];
    const scheduler = new Scheduler({
      store,
      clock: { now: () => 0 },
      concurrency: 4,
      perDestination: 4,
      run: async (lease) => {
        ran.push(lease.id);
      },
      log: silentLogger(),
    });
    await scheduler.runDue();
    expect(ran).toEqual(['m0', 'm1']);
    // Two jobs for four free slots: nothing else is due, so no second question.
    expect(store.looks).toBe(1);
    await scheduler.close(0);
  });
});
