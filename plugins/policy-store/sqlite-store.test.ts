/**
 * The embedded policy state store: for any sequence of operations, flushes
 * and reopens, it gives the reference semantics of the store interface
 * (`greylistStep`, `bucketStep`); it keeps state across a reopen and, once
 * flushed, across a SIGKILL; it prunes only what expired; and one process
 * owns the file.
 */

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { assertReferenceSemantics } from '../../test/helpers/policy-store-property.ts';
import type { GreylistTimes, TokenBucket } from '../policy/state-store.ts';
import { SqlitePolicyStore, type SqliteStoreOptions } from './sqlite-store.ts';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const T0 = Date.parse('2026-03-02T10:00:00.000Z');
const TIMES: GreylistTimes = { delay: 5 * MINUTE, retryWindow: 2 * DAY, lifetime: 35 * DAY };

let dirs: string[] = [];
let stores: SqlitePolicyStore[] = [];
afterEach(async () => {
  for (const s of stores) s.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  dirs = [];
  stores = [];
});

async function dbPath(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mf-policy-state-'));
  dirs.push(dir);
  return join(dir, 'policy-state.sqlite');
}

function open(path: string, options: Partial<SqliteStoreOptions> = {}): SqlitePolicyStore {
  const store = new SqlitePolicyStore({ path, ...options });
  stores.push(store);
  return store;
}

describe('greylistSeen', () => {
  it('new, early until the delay, then passed and renewed on use', async () => {
    const store = open(await dbPath());
    const key = '192.0.2.0/24|a@example.org|b@example.com';
    expect(await store.greylistSeen(key, T0, TIMES)).toEqual({
      status: 'new',
      firstSeen: T0,
      expires: T0 + TIMES.retryWindow,
    });
    expect((await store.greylistSeen(key, T0 + 4 * MINUTE, TIMES)).status).toBe('early');
    const passed = await store.greylistSeen(key, T0 + 5 * MINUTE, TIMES);
    expect(passed).toEqual({ status: 'passed', firstSeen: T0, expires: T0 + 5 * MINUTE + TIMES.lifetime });
    const later = T0 + 30 * DAY;
    expect(await store.greylistSeen(key, later, TIMES)).toEqual({
      status: 'passed',
      firstSeen: T0,
      expires: later + TIMES.lifetime,
    });
  });

  it('an unpassed triplet starts over after the retry window, a passed one after its lifetime', async () => {
    const store = open(await dbPath());
    await store.greylistSeen('unpassed', T0, TIMES);
    const late = T0 + TIMES.retryWindow;
    expect(await store.greylistSeen('unpassed', late, TIMES)).toMatchObject({
      status: 'new',
      firstSeen: late,
    });

    await store.greylistSeen('passed', T0, TIMES);
    await store.greylistSeen('passed', T0 + TIMES.delay, TIMES);
    const gone = T0 + TIMES.delay + TIMES.lifetime;
    expect(await store.greylistSeen('passed', gone - 1, TIMES)).toMatchObject({ status: 'passed' });
    expect(await store.greylistSeen('passed', gone - 1 + TIMES.lifetime, TIMES)).toMatchObject({
      status: 'new',
    });
  });
});

describe('takeTokens', () => {
  it('takes until empty, refuses with the wait, and refills with time', async () => {
    const store = open(await dbPath());
    const bucket: TokenBucket = { capacity: 3, intervalMs: MINUTE / 3 };
    for (let i = 0; i < 3; i++) expect((await store.takeTokens('k', T0, bucket, 1)).allowed).toBe(true);
    expect(await store.takeTokens('k', T0, bucket, 1)).toEqual({
      allowed: false,
      remaining: 0,
      retryAfterMs: 20_000,
    });
    expect((await store.takeTokens('k', T0 + 19_999, bucket, 1)).allowed).toBe(false);
    expect((await store.takeTokens('k', T0 + 20_000, bucket, 1)).allowed).toBe(true);
    // A quiet hour fills it up to its capacity, not beyond.
    const full = await store.takeTokens('k', T0 + 60 * MINUTE, bucket, 1);
    expect(full).toEqual({ allowed: true, remaining: 2, retryAfterMs: 0 });
  });
});

describe('the store against the reference semantics', () => {
  it('gives the same answers as greylistStep and bucketStep for any sequence, through flushes and reopens', async () => {
    const path = await dbPath();
    // A tiny cache: entries are forgotten after each flush and read back from the database.
    const reopen = () => open(path, { maxCached: 1 });
    let store = reopen();
    await assertReferenceSemantics({
      current: () => store,
      flush: () => store.flush(),
      reopen: () => {
        store.close();
        store = reopen();
      },
    });
  });
});

describe('the database', () => {
  it('keeps its state across a reopen, in a file only its owner reads', async () => {
    const path = await dbPath();
    const first = open(path);
    await first.greylistSeen('t', T0, TIMES);
    await first.greylistSeen('t', T0 + TIMES.delay, TIMES);
    await first.takeTokens('k', T0, { capacity: 1, intervalMs: MINUTE }, 1);
    first.close();
    const again = open(path);
    expect((await again.greylistSeen('t', T0 + DAY, TIMES)).status).toBe('passed');
    expect((await again.takeTokens('k', T0, { capacity: 1, intervalMs: MINUTE }, 1)).allowed).toBe(false);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('writes in batches with the event loop running between them, losing no change made meanwhile', async () => {
    const path = await dbPath();
    // Two entries cached: whatever the test reads back comes from the database.
    const store = open(path, { maxCached: 2 });
    const keys = Array.from({ length: 5000 }, (_, i) => `t${i}`);
    for (const key of keys) store.greylistSeen(key, T0, TIMES);
    const flushing = store.flushInBatches();
    // The first batch is written; this change to one of its entries comes between batches.
    store.greylistSeen('t0', T0 + TIMES.retryWindow, TIMES); // expired: new again, first seen now
    await flushing;
    await store.flushInBatches();
    expect(store.greylistSeen('t4999', T0 + TIMES.delay, TIMES).status).toBe('passed');
    expect(store.greylistSeen('t0', T0 + TIMES.retryWindow + 1, TIMES)).toMatchObject({
      status: 'early',
      firstSeen: T0 + TIMES.retryWindow,
    });
  });

  it('belongs to one process: a second store on the same file is refused', async () => {
    const path = await dbPath();
    open(path);
    expect(() => open(path)).toThrow(/is in use by another process/);
  });

  it('keeps what a process flushed when the process is killed (SIGKILL), loses what it had not', async () => {
    const path = await dbPath();
    const storeUrl = new URL('./sqlite-store.ts', import.meta.url).href;
    const code = `
      const { SqlitePolicyStore } = await import(${JSON.stringify(storeUrl)});
      const store = new SqlitePolicyStore({ path: ${JSON.stringify(path)} });
      store.greylistSeen('t', ${T0}, ${JSON.stringify(TIMES)});
      store.takeTokens('k', ${T0}, { capacity: 1, intervalMs: ${MINUTE} }, 1);
      store.flush();
      store.greylistSeen('unflushed', ${T0}, ${JSON.stringify(TIMES)});
      process.stdout.write('written\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = once(child, 'exit');
    try {
      let out = '';
      for await (const chunk of child.stdout) {
        out += String(chunk);
        if (out.includes('written')) break;
      }
      expect(out).toContain('written');
    } finally {
      child.kill('SIGKILL');
    }
    expect(await exited).toEqual([null, 'SIGKILL']);
    const after = open(path);
    expect((await after.greylistSeen('t', T0 + TIMES.delay, TIMES)).status).toBe('passed');
    expect((await after.takeTokens('k', T0, { capacity: 1, intervalMs: MINUTE }, 1)).allowed).toBe(false);
    expect((await after.greylistSeen('unflushed', T0 + TIMES.delay, TIMES)).status).toBe('new');
  });

  it('prunes expired entries and full buckets only', async () => {
    const store = open(await dbPath());
    const bucket: TokenBucket = { capacity: 2, intervalMs: MINUTE / 2 };
    await store.greylistSeen('old', T0, TIMES);
    await store.greylistSeen('young', T0 + DAY, TIMES);
    await store.takeTokens('refilled', T0, bucket, 1); // full again at T0 + 30 s
    await store.takeTokens('drained', T0 + TIMES.retryWindow, bucket, 2);
    expect(await store.prune(T0 + TIMES.retryWindow)).toBe(2);
    // The young triplet is still early, not new; the drained bucket still empty.
    expect((await store.greylistSeen('young', T0 + DAY + 1, TIMES)).status).toBe('early');
    expect((await store.takeTokens('drained', T0 + TIMES.retryWindow, bucket, 1)).allowed).toBe(false);
  });

  it('refuses a database written by a newer schema', async () => {
    const path = await dbPath();
    open(path).close();
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(path);
    db.exec('PRAGMA user_version = 99');
    db.close();
    expect(() => open(path)).toThrow(/has policy state schema 99; this mailframe knows up to 1/);
  });
});
