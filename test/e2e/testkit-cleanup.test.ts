import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Type from 'typebox';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { startTestServer } from '../../core/testkit.ts';

/**
 * The test kit makes its data directories under os.tmpdir(), which the whole
 * run shares: other test files, in parallel workers, add and remove theirs
 * there at any time. These tests point TMPDIR at a folder of their own.
 */
let own: string;
beforeEach(async () => {
  own = await mkdtemp(join(tmpdir(), 'mailframe-cleanup-'));
  vi.stubEnv('TMPDIR', own);
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await rm(own, { recursive: true, force: true });
});

async function testDirs(): Promise<string[]> {
  return (await readdir(own)).filter((n) => n.startsWith('mailframe-test-')).sort();
}

/** A plugin that records whether the server closed it. */
function closeProbe(closed: string[], failRegister = false) {
  return definePlugin({
    name: 'close-probe',
    schema: Type.Object({}),
    register(api) {
      api.onClose(() => {
        closed.push('closed');
      });
      if (failRegister) throw new Error('refusing to start');
    },
  });
}

describe('testkit cleanup when a start fails', () => {
  it('makes its data directory where these tests look, and removes it on close', async () => {
    const t = await startTestServer();
    expect(await testDirs()).toHaveLength(1);
    await t.close();
    expect(await testDirs()).toEqual([]);
  });

  it('removes the data directory and closes plugins when a plugin fails to register', async () => {
    const closed: string[] = [];
    await expect(startTestServer({ plugins: [closeProbe(closed, true)] })).rejects.toMatchObject({
      code: 'MF_PLUGIN_REGISTER',
    });
    expect(await testDirs()).toEqual([]);
    expect(closed).toEqual(['closed']);
  });

  it('removes the data directory and closes plugins when a listener cannot bind', async () => {
    const taken = createServer();
    await new Promise<void>((ok) => taken.listen(0, '127.0.0.1', ok));
    try {
      const port = (taken.address() as { port: number }).port;
      const closed: string[] = [];
      await expect(
        startTestServer({
          plugins: [closeProbe(closed)],
          config: { listeners: [{ name: 'smtp', host: '127.0.0.1', port }] },
        }),
      ).rejects.toMatchObject({ code: 'MF_LISTEN' });
      expect(await testDirs()).toEqual([]);
      expect(closed).toEqual(['closed']);
    } finally {
      await new Promise<void>((ok) => taken.close(() => ok()));
    }
  });
});
