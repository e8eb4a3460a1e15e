import { readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { startTestServer } from '../../core/testkit.ts';

async function testDirs(): Promise<string[]> {
  return (await readdir(tmpdir())).filter((n) => n.startsWith('mailframe-test-')).sort();
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
  it('removes the data directory and closes plugins when a plugin fails to register', async () => {
    const before = await testDirs();
    const closed: string[] = [];
    await expect(startTestServer({ plugins: [closeProbe(closed, true)] })).rejects.toMatchObject({
      code: 'MF_PLUGIN_REGISTER',
    });
    expect(await testDirs()).toEqual(before);
    expect(closed).toEqual(['closed']);
  });

  it('removes the data directory and closes plugins when a listener cannot bind', async () => {
    const taken = createServer();
    await new Promise<void>((ok) => taken.listen(0, '127.0.0.1', ok));
    try {
      const port = (taken.address() as { port: number }).port;
      const before = await testDirs();
      const closed: string[] = [];
      await expect(
        startTestServer({
          plugins: [closeProbe(closed)],
          config: { listeners: [{ name: 'smtp', host: '127.0.0.1', port }] },
        }),
      ).rejects.toMatchObject({ code: 'MF_LISTEN' });
      expect(await testDirs()).toEqual(before);
      expect(closed).toEqual(['closed']);
    } finally {
      await new Promise<void>((ok) => taken.close(() => ok()));
    }
  });
});
