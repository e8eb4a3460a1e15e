import { describe, expect, it } from 'vitest';
import { BodyCache } from './body-cache.ts';

/** A buffer with its own backing store of exactly `n` octets. */
const own = (n: number, fill = 120) => Buffer.alloc(n, fill);

describe('BodyCache', () => {
  it('keeps bodies up to its bound and admits nothing more once full', () => {
    const cache = new BodyCache(3000);
    cache.add('a', own(1000));
    cache.add('b', own(1000));
    cache.add('c', own(1500)); // would pass the bound: not kept
    expect(cache.get('a')?.length).toBe(1000);
    expect(cache.get('b')?.length).toBe(1000);
    expect(cache.get('c')).toBeUndefined();
    expect(cache.bytes).toBe(2000);
    cache.delete('a');
    cache.add('c', own(1500));
    expect(cache.get('c')?.length).toBe(1500);
    expect(cache.bytes).toBe(2500);
  });

  it('counts the whole backing store a slice keeps alive', () => {
    const cache = new BodyCache(10_000);
    const slab = Buffer.alloc(8192);
    cache.add('slice', slab.subarray(0, 100));
    expect(cache.bytes).toBe(8192);
    cache.add('other', slab.subarray(100, 200)); // another 8192 would pass the bound
    expect(cache.get('other')).toBeUndefined();
    cache.delete('slice');
    expect(cache.bytes).toBe(0);
  });

  it('holds nothing when its bound is 0', () => {
    const cache = new BodyCache(0);
    cache.add('a', own(1));
    expect(cache.get('a')).toBeUndefined();
  });
});
