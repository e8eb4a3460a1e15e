import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DirSync } from './group-sync.ts';

describe('DirSync (group commit of directory fsyncs)', () => {
  it('covers every request that arrives while an fsync runs with one more fsync', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-gs-'));
    const sync = new DirSync(dir);
    try {
      await Promise.all(Array.from({ length: 20 }, () => sync.sync()));
      // The first request starts an fsync; the other 19 arrived while it ran and share the next one.
      expect(sync.counters).toEqual({ fsyncs: 2, requests: 20 });
      await sync.sync();
      expect(sync.counters.fsyncs).toBe(3);
    } finally {
      await sync.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('rejects the waiters of a failed fsync and keeps working for later ones', async () => {
    const sync = new DirSync(join(tmpdir(), 'mf-gs-does-not-exist', 'x'));
    await expect(sync.sync()).rejects.toThrow(/ENOENT/);
    await expect(sync.sync()).rejects.toThrow(/ENOENT/);
    await sync.close();
  });
});
