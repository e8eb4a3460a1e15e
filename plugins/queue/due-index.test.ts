import { describe, expect, it } from 'vitest';
import { DueIndex } from './due-index.ts';
import { IndexedHeap } from './indexed-heap.ts';

describe('IndexedHeap', () => {
  it('pops in priority order after updates and deletes', () => {
    const h = new IndexedHeap<string>();
    const values = [50, 10, 40, 20, 30, 60, 5];
    for (const [i, v] of values.entries()) h.set(`k${i}`, v);
    h.set('k5', 1); // 60 -> 1
    h.set('k1', 45); // 10 -> 45
    h.delete('k3'); // 20
    const out: string[] = [];
    for (let top = h.pop(); top; top = h.pop()) out.push(`${top.key}:${top.priority}`);
    expect(out).toEqual(['k5:1', 'k6:5', 'k4:30', 'k2:40', 'k1:45', 'k0:50']);
  });
});

describe('DueIndex', () => {
  it('takes due jobs within each destination room and reports the next time', () => {
    const idx = new DueIndex();
    idx.set('a.example', 'm1', 10);
    idx.set('a.example', 'm2', 20);
    idx.set('a.example', 'm3', 30);
    idx.set('b.example', 'm1', 15);
    idx.set('c.example', 'm4', 100);
    const room = { perDestination: 2, busy: new Map([['a.example', 1]]) };
    const taken = idx.take(25, 10, room);
    expect(taken.map((j) => `${j.destination}/${j.id}`)).toEqual(['a.example/m1', 'b.example/m1']);
    expect(idx.size).toBe(3);
    // a.example is full now (1 busy + 1 taken): the next time a job could start is c's.
    const full = { perDestination: 2, busy: new Map([['a.example', 2]]) };
    expect(idx.next(full)).toBe(100);
    expect(idx.next()).toBe(20);
    idx.delete('a.example', 'm2');
    expect(idx.next()).toBe(30);
    expect(idx.take(1000, 1).map((j) => j.id)).toEqual(['m3']);
  });
});
