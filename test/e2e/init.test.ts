/**
 * `mailframe init`: the project it writes for each role starts as written
 * (every setting validates, every plugin loads, the listener greets), and it
 * refuses to overwrite a directory by accident. That the project installs from
 * the packed tarball and passes its own `npm test` is in test/package.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runInit } from '../../bin/init.ts';
import { MailServer } from '../../core/server.ts';
import { connectClient } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const ROOT = resolve(import.meta.dirname, '../..');

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-init-'));
  scope.defer(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function init(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io = {
    out: (s: string) => {
      out += s;
    },
    err: (s: string) => {
      err += s;
    },
  };
  const code = await runInit(args, ROOT, io);
  return { code, out, err };
}

describe('mailframe init', () => {
  for (const role of ['mx', 'submission', 'relay'] as const) {
    it(`writes a ${role} project whose mailframe.json starts and greets`, async () => {
      const dir = join(await tempDir(), 'my-mta');
      const r = await init([dir, `--${role}`]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      for (const f of ['package.json', 'mailframe.json', 'README.md', 'plugins/local-policy/index.test.ts']) {
        expect(existsSync(join(dir, f)), f).toBe(true);
      }
      const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as Record<string, never>;
      expect(pkg['name']).toBe('my-mta');
      expect(pkg['dependencies']).toMatchObject({ mailframe: '^0.1.0' });
      expect(pkg['scripts']).toMatchObject({ start: 'mailframe start', test: 'node --test' });

      // Its plugin imports typebox (and mailframe, aliased to the sources here) from node_modules.
      await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
      const config = JSON.parse(await readFile(join(dir, 'mailframe.json'), 'utf8')) as {
        listeners: object[];
        plugins: Array<{ plugin: string; config?: Record<string, unknown> }>;
      };
      expect(config.plugins.map((p) => p.plugin)).toContain('./plugins/local-policy/index.ts');
      for (const p of config.plugins) {
        // auth-users-file reads its path relative to the working directory (the project's, under npm start).
        if (p.plugin === 'auth-users-file') p.config = { path: join(dir, 'users.json') };
      }
      const server = await MailServer.create({
        config: {
          ...config,
          dataDir: join(dir, 'var'),
          listeners: config.listeners.map((l) => ({ ...l, port: 0 })),
        },
        baseDir: dir,
      });
      scope.defer(() => server.close(0));
      const [first] = await server.listen();
      const c = await connectClient(first?.port ?? 0);
      scope.defer(() => c.close());
      expect(c.greeting?.code).toBe(220);
      await c.expect('EHLO client.example', 250);
      if (role === 'submission') expect(r.out).toMatch(/User "alice" has the password \S+/);
    });
  }

  it('refuses a directory that is not empty, unless --force', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'notes.txt'), 'mine');
    const refused = await init([dir]);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('is not empty');
    expect(existsSync(join(dir, 'mailframe.json'))).toBe(false);
    expect((await init([dir, '--force'])).code).toBe(0);
    expect(existsSync(join(dir, 'mailframe.json'))).toBe(true);
  });

  it('takes one role only', async () => {
    const r = await init([await tempDir(), '--mx', '--relay']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('choose one role');
  });
});
