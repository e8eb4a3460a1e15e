/**
 * The per-turn batch dkim-verify runs its event-loop checks in
 * (plugins/dkim-verify/turn-batch.ts): what a turn gathers runs together and
 * in order, a later turn runs apart, a throw fails only its own item.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { TurnBatch } from '../../plugins/dkim-verify/turn-batch.ts';

describe('TurnBatch', () => {
  it('runs the items added in one turn together, in order, in its check phase', async () => {
    const ran: string[] = [];
    const batch = new TurnBatch((item: string) => {
      ran.push(item);
      return item.toUpperCase();
    });
    const answers = [batch.add('a'), batch.add('b'), batch.add('c')];
    // Nothing runs while the turn that added them is still going.
    expect(ran).toEqual([]);
    expect(await Promise.all(answers)).toEqual(['A', 'B', 'C']);
    expect(ran).toEqual(['a', 'b', 'c']);
    expect(batch.turns).toBe(1);
  });

  it('gives a later turn a run of its own', async () => {
    const batch = new TurnBatch((n: number) => n * 2);
    const first = batch.add(1);
    await nextTurn();
    const second = batch.add(2);
    expect(await Promise.all([first, second])).toEqual([2, 4]);
    expect(batch.turns).toBe(2);
  });

  it('rejects only the item whose run threw, and passes on a promise an item runs to', async () => {
    const batch = new TurnBatch((n: number) => {
      if (n === 2) throw new Error('two');
      return n === 3 ? Promise.resolve(30) : n;
    });
    const [one, two, three] = await Promise.allSettled([batch.add(1), batch.add(2), batch.add(3)]);
    expect(one).toEqual({ status: 'fulfilled', value: 1 });
    expect(two).toMatchObject({ status: 'rejected', reason: new Error('two') });
    expect(three).toEqual({ status: 'fulfilled', value: 30 });
  });
});
