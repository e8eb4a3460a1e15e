/**
 * Configuration and plugin loading: every error is reported with its JSON
 * pointer (and plugin), under coded errors; plugins load from files relative
 * to the config; and the CLI's check-config and --version.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { MailframeError } from '../../core/errors.ts';
import { definePlugin, type PluginDefinition } from '../../core/plugin.ts';
import { MailServer } from '../../core/server.ts';
import { connectClient } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-config-'));
  scope.defer(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A minimal valid config; `dataDir` points into a temp dir so nothing is written to the repo. */
async function baseConfig(extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  return {
    hostname: 'mx.test.example',
    dataDir: await tempDir(),
    listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
    ...extra,
  };
}

/** `MailServer.create` must reject; returns the error. */
async function createFails(
  config: unknown,
  opts: { baseDir?: string; definitions?: ReadonlyMap<string, PluginDefinition> } = {},
): Promise<MailframeError> {
  let server: MailServer | undefined;
  try {
    server = await MailServer.create({ config, ...opts });
  } catch (err) {
    expect(err).toBeInstanceOf(MailframeError);
    return err as MailframeError;
  }
  await server.close(0);
  throw new Error('MailServer.create accepted an invalid configuration');
}

describe('core config validation', () => {
  it('accepts $comment keys on the root, a listener and a plugin entry, and still refuses misspelt keys', async () => {
    const config = await baseConfig({
      $comment: ['A file people read:', 'comments explain each part.'],
      listeners: [{ $comment: 'loopback only', name: 'smtp', host: '127.0.0.1', port: 0 }],
      plugins: [{ $comment: 'ENHANCEDSTATUSCODES', plugin: 'enhanced-status-codes' }],
    });
    const server = await MailServer.create({ config });
    await server.close(0);
    const err = await createFails(await baseConfig({ $coment: 'typo' }));
    expect(err.message).toContain('/$coment');
  });

  it('rejects an unknown core key, naming its JSON pointer', async () => {
    const err = await createFails(await baseConfig({ limits: { bogus: 1 } }));
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/limits/bogus');
  });

  it('rejects an unknown top-level key', async () => {
    const err = await createFails(await baseConfig({ nonsense: true }));
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/nonsense');
  });

  it('rejects a value of the wrong type, naming its JSON pointer', async () => {
    const err = await createFails(await baseConfig({ limits: { maxRecipients: 'ten' } }));
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/limits/maxRecipients');
  });

  it('rejects an out-of-range value and a bad enum value', async () => {
    const err = await createFails(
      await baseConfig({ limits: { maxLineLength: 100 }, smtp: { bareLineEndings: 'ignore' } }),
    );
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/limits/maxLineLength');
    expect(err.message).toContain('/smtp/bareLineEndings');
  });

  it('reports every error at once', async () => {
    const err = await createFails(
      await baseConfig({
        limits: { bogus: 1, maxErrors: 0 },
        plugins: [{ plugin: 'rcpt-local', config: { domains: 'x' } }, { plugin: 'no-such-plugin-xyz' }],
      }),
    );
    expect(err.code).toBe('MF_CONFIG_INVALID');
    for (const pointer of [
      '/limits/bogus',
      '/limits/maxErrors',
      '/plugins/0/config/domains',
      '/plugins/1/plugin',
    ]) {
      expect(err.message).toContain(pointer);
    }
  });
});

describe('plugin loading', () => {
  it('rejects an unknown plugin name, naming it', async () => {
    const err = await createFails(await baseConfig({ plugins: [{ plugin: 'no-such-plugin-xyz' }] }));
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/plugins/0/plugin');
    expect(err.message).toContain('no-such-plugin-xyz');
  });

  it('reports a plugin config error under /plugins/N/config with the plugin name', async () => {
    const err = await createFails(
      await baseConfig({
        plugins: [
          { plugin: 'pipelining' },
          { plugin: 'rcpt-local', config: { domains: ['example.com'], mailbox: ['x'] } },
          { plugin: 'rcpt-local', id: 'second', config: { domains: [7] } },
        ],
      }),
    );
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/plugins/1/config/mailbox');
    expect(err.message).toContain('(plugin rcpt-local)');
    expect(err.message).toContain('/plugins/2/config/domains/0');
    expect(err.message).toContain('(plugin second)');
  });

  it('reports a missing dependency', async () => {
    const needy = definePlugin({
      name: 'needy',
      schema: Type.Object({}),
      dependencies: ['rcpt-local'],
      register() {},
    });
    const definitions = new Map<string, PluginDefinition>([['needy', needy]]);
    const err = await createFails(await baseConfig({ plugins: [{ plugin: 'needy' }] }), { definitions });
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/plugins/0');
    expect(err.message).toContain('"needy" needs plugin "rcpt-local"');
    // Loaded before it, the dependency is satisfied.
    const ok = await MailServer.create({
      config: await baseConfig({ plugins: [{ plugin: 'rcpt-local' }, { plugin: 'needy' }] }),
      definitions,
    });
    await ok.close(0);
  });

  it('reports the same instance configured twice', async () => {
    const err = await createFails(
      await baseConfig({ plugins: [{ plugin: 'pipelining' }, { plugin: 'pipelining' }] }),
    );
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/plugins/1');
    expect(err.message).toContain('"pipelining"');
  });

  it('fails with MF_PLUGIN_REGISTER when register throws', async () => {
    const broken = definePlugin({
      name: 'broken',
      schema: Type.Object({}),
      register() {
        throw new Error('cannot open database');
      },
    });
    const err = await createFails(await baseConfig({ plugins: [{ plugin: 'broken' }] }), {
      definitions: new Map<string, PluginDefinition>([['broken', broken]]),
    });
    expect(err.code).toBe('MF_PLUGIN_REGISTER');
    expect(err.message).toContain('"broken"');
    expect(err.message).toContain('cannot open database');
  });

  it('closes plugins already loaded when a later one fails to register', async () => {
    const closed: string[] = [];
    const good = definePlugin({
      name: 'good',
      schema: Type.Object({}),
      register(api) {
        api.onClose(() => {
          closed.push('good');
        });
      },
    });
    const bad = definePlugin({
      name: 'bad',
      schema: Type.Object({}),
      async register() {
        throw new Error('nope');
      },
    });
    const err = await createFails(await baseConfig({ plugins: [{ plugin: 'good' }, { plugin: 'bad' }] }), {
      definitions: new Map<string, PluginDefinition>([
        ['good', good],
        ['bad', bad],
      ]),
    });
    expect(err.code).toBe('MF_PLUGIN_REGISTER');
    expect(closed).toEqual(['good']);
  });

  it('loads a plugin from a file path relative to baseDir, with its validated config', async () => {
    const dir = await tempDir();
    await writeFile(
      join(dir, 'accept-all.mjs'),
      `export default {
  name: 'accept-all',
  schema: {
    type: 'object',
    properties: { text: { type: 'string', default: 'Accepted by file plugin' } },
    additionalProperties: false,
  },
  register(api, config) {
    api.hooks.rcpt.tap(() => ({ code: 250, enhanced: '2.1.5', text: config.text }));
  },
};
`,
    );
    const config = await baseConfig({
      plugins: [{ plugin: 'enhanced-status-codes' }, { plugin: './accept-all.mjs' }],
    });
    const server = await MailServer.create({ config, baseDir: dir });
    scope.defer(() => server.close(0));
    const [address] = await server.listen();
    const c = await connectClient(address!.port);
    scope.defer(() => c.close());
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    const r = await c.expect('RCPT TO:<anyone@anywhere.example>', 250, '2.1.5');
    expect(r.lines).toEqual(['Accepted by file plugin']);

    // The file plugin's own schema is enforced too.
    const err = await createFails(
      await baseConfig({ plugins: [{ plugin: './accept-all.mjs', config: { text: 5 } }] }),
      { baseDir: dir },
    );
    expect(err.message).toContain('/plugins/0/config/text');
    expect(err.message).toContain('(plugin accept-all)');
  });

  it('rejects a missing plugin file and a file that is not a plugin', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'not-a-plugin.mjs'), 'export default { hello: 1 };\n');
    const err = await createFails(
      await baseConfig({ plugins: [{ plugin: './missing.mjs' }, { plugin: './not-a-plugin.mjs' }] }),
      { baseDir: dir },
    );
    expect(err.code).toBe('MF_CONFIG_INVALID');
    expect(err.message).toContain('/plugins/0/plugin');
    expect(err.message).toContain('./missing.mjs');
    expect(err.message).toContain('/plugins/1/plugin');
    expect(err.message).toContain('./not-a-plugin.mjs');
  });

  it('fills in defaults and freezes the config', async () => {
    const server = await MailServer.create({ config: await baseConfig() });
    scope.defer(() => server.close(0));
    expect(server.config.limits.maxRecipients).toBe(100);
    expect(server.config.limits.maxLineLength).toBe(512);
    expect(server.config.smtp.bareLineEndings).toBe('normalize');
    expect(Object.isFrozen(server.config.limits)).toBe(true);
  });
});

describe('CLI', () => {
  const cli = (...args: string[]) =>
    run(join(ROOT, 'node_modules/.bin/node'), [join(ROOT, 'bin/mailframe.js'), ...args], {
      cwd: ROOT,
      timeout: 15000,
    });

  it('check-config exits 0 for a good file', async () => {
    const dir = await tempDir();
    const file = join(dir, 'mailframe.json');
    await writeFile(
      file,
      JSON.stringify({
        hostname: 'mx.test.example',
        dataDir: './var',
        listeners: [{ name: 'smtp', port: 2525 }],
        plugins: [{ plugin: 'rcpt-local', config: { domains: ['example.com'] } }],
      }),
    );
    const { stdout } = await cli('check-config', file);
    expect(stdout).toContain('OK');
  });

  it('check-config exits 1 for a bad file and names the JSON pointer on stderr', async () => {
    const dir = await tempDir();
    const file = join(dir, 'mailframe.json');
    await writeFile(
      file,
      JSON.stringify({
        dataDir: './var',
        limits: { bogus: 1 },
        plugins: [{ plugin: 'rcpt-local', config: { domains: 'example.com' } }],
      }),
    );
    const err = await cli('check-config', file).then(
      () => undefined,
      (e: { code?: number; stderr?: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toContain('/limits/bogus');
    expect(err?.stderr).toContain('/plugins/0/config/domains');
  });

  it('the mailframe command (bin/mailframe.js) runs the sources in the repository, and a plugin importing "mailframe" loads without a build', async () => {
    const dir = await tempDir();
    const file = join(dir, 'mailframe.json');
    const plugin = join(ROOT, 'examples', 'block-sender-domains', 'index.ts');
    await writeFile(
      file,
      JSON.stringify({
        dataDir: './var',
        listeners: [{ name: 'smtp', port: 0 }],
        plugins: [{ plugin, config: { domains: ['spam.example'] } }],
      }),
    );
    const { stdout } = await run(
      join(ROOT, 'node_modules/.bin/node'),
      [join(ROOT, 'bin/mailframe.js'), 'check-config', file],
      {
        cwd: dir,
        timeout: 15000,
      },
    );
    expect(stdout).toContain(`${file}: OK`);
  });

  it('--version prints the package.json version', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const { stdout } = await cli('--version');
    expect(stdout.trim()).toBe(pkg.version);
  });
});
