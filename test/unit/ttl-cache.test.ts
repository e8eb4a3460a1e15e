/**
 * The DNS answer cache (core/dns/cache.ts, also SPF's and DMARC's result
 * caches): bounded, entries dropped at expiry, least recently used evicted
 * first with a hit costing only a mark (second chance), never the entry just
 * added.
 */
import { describe, expect, it } from 'vitest';
import { TtlCache } from '../../core/dns/cache.ts';

describe('TtlCache', () => {
  it('serves an entry until its expiry and not at or after it', () => {
    const c = new TtlCache<string>(10);
    c.set('a', 'A', 1000);
    expect(c.get('a', 0)?.value).toBe('A');
    expect(c.get('a', 999)).toMatchObject({ value: 'A', expires: 1000 });
    expect(c.get('a', 1000)).toBeUndefined();
    // Dropped: an earlier clock does not bring it back.
    expect(c.get('a', 0)).toBeUndefined();
  });

  it('evicts the least recently used: an entry read since it was added survives', () => {
    const c = new TtlCache<string>(2);
    c.set('a', 'A', 1e9);
    c.set('b', 'B', 1e9);
    c.get('a', 0);
    c.set('c', 'C', 1e9); // b goes
    expect(c.get('b', 0)).toBeUndefined();
    expect(c.get('a', 0)?.value).toBe('A');
    expect(c.get('c', 0)?.value).toBe('C');
    // An approximation of LRU: among entries that were all read since the last eviction, one of
    // them goes (here c, first in the list), never the entry being added.
    c.set('d', 'D', 1e9);
    expect([c.get('a', 0), c.get('c', 0), c.get('d', 0)].filter(Boolean)).toHaveLength(2);
    expect(c.get('d', 0)?.value).toBe('D');
  });

  it('never evicts the entry just added, even when every other one was read', () => {
    const c = new TtlCache<string>(3);
    for (const k of ['a', 'b', 'c']) c.set(k, k.toUpperCase(), 1e9);
    for (const k of ['a', 'b', 'c']) c.get(k, 0);
    c.set('d', 'D', 1e9);
    expect(c.get('d', 0)?.value).toBe('D');
    // The oldest of the read ones went.
    expect(c.get('a', 0)).toBeUndefined();
    expect(c.get('b', 0)?.value).toBe('B');
    expect(c.get('c', 0)?.value).toBe('C');
  });

  it('holds at most its capacity, replaces a key in place, and holds nothing at capacity 0', () => {
    const c = new TtlCache<number>(3);
    for (let i = 0; i < 50; i++) {
      c.set(`k${i % 7}`, i, 1e9);
      if (i % 2) c.get(`k${(i * 3) % 7}`, 0);
    }
    let held = 0;
    for (let i = 0; i < 7; i++) if (c.get(`k${i}`, 0) !== undefined) held++;
    expect(held).toBe(3);
    c.set('k0', -1, 1e9);
    expect(c.get('k0', 0)?.value).toBe(-1);
    const none = new TtlCache<number>(0);
    none.set('x', 1, 1e9);
    expect(none.get('x', 0)).toBeUndefined();
  });
});
