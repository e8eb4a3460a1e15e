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

describe('DirSync.syncSoon (deferred durability for removals)', () => {
  it('flushes a change nobody covered when it closes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-gs-'));
    const sync = new DirSync(dir);
    try {
      sync.syncSoon(60_000);
      expect(sync.counters.fsyncs).toBe(0);
      await sync.close();
      expect(sync.counters.fsyncs).toBe(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('makes no fsync of its own for a change a later fsync covered', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-gs-'));
    const sync = new DirSync(dir);
    try {
      sync.syncSoon(60_000);
      await sync.sync();
      expect(sync.counters.fsyncs).toBe(1);
      await sync.close();
      expect(sync.counters.fsyncs).toBe(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('fsyncs by itself once the delay passes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-gs-'));
    const sync = new DirSync(dir);
    try {
      sync.syncSoon(5);
      for (let i = 0; i < 200 && sync.counters.fsyncs === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(sync.counters.fsyncs).toBe(1);
    } finally {
      await sync.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
