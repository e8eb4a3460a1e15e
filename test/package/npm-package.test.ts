/**
 * Acceptance for mailframe as an npm package (issue 13): the repository is
 * packed once, the tarball installed into a temporary application outside the
 * repository, and everything runs under plain `node` (Node 24, no loader, no
 * tsx) from what npm installed:
 *
 * - a server from a config that loads a bundled plugin, a plugin from a
 *   separate local package by its package name, and a plugin defined in code;
 *   a message over SMTP, queued by queue-fs and found with `mailframe queue`;
 * - TypeScript in that application type-checks against the shipped `.d.ts`,
 *   and a deliberate type error fails;
 * - `mailframe init` writes a project that installs from the tarball and
 *   whose own `npm test` passes.
 *
 * Two `npm install`s per run (the registry must be reachable).
 */
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAjv } from '../../core/config.ts';
import { connectClient } from '../../core/testkit.ts';
import {
  must,
  npmInstall,
  type Packed,
  packRepository,
  ROOT,
  run,
  startProcess,
  stopProcess,
} from './npm-helpers.ts';

const TYPE_ROOTS = join(ROOT, 'node_modules', '@types');

let packed: Packed | undefined;
let app = '';

beforeAll(async () => {
  packed = await packRepository();
  app = join(packed.work, 'app');
  await mkdir(app);
  await writeFile(
    join(app, 'package.json'),
    JSON.stringify({ name: 'mailframe-acceptance-app', version: '1.0.0', private: true, type: 'module' }),
  );
  // The example plugin package, as a separate local package the app depends on.
  const plugin = join(app, 'packages', 'mailframe-plugin-stamp');
  for (const f of ['package.json', 'tsconfig.json', 'src']) {
    await cp(join(ROOT, 'examples', 'plugin-package', f), join(plugin, f), {
      recursive: true,
      filter: (from) => !from.endsWith('.test.ts'),
    });
  }
  await npmInstall(app, [packed.tarball, './packages/mailframe-plugin-stamp']);
  // Its build (what its prepack does before publishing), against the installed mailframe's types.
  await must('tsc', ['-p', plugin, '--typeRoots', TYPE_ROOTS], app);
}, 600_000);

afterAll(async () => {
  await packed?.cleanup();
});

describe('the installed package', () => {
  it('ships built JavaScript and declarations, no sources, tests or bench', async () => {
    const list = await must('tar', ['-tzf', packed?.tarball ?? ''], ROOT);
    const files = list.stdout.split('\n').filter(Boolean);
    expect(files).toContain('package/dist/core/index.js');
    expect(files).toContain('package/dist/core/index.d.ts');
    expect(files).toContain('package/dist/core/testkit.js');
    expect(files).toContain('package/dist/plugins/queue-fs/index.js');
    // Loaded by path (new Worker(new URL('./worker.js', ...))), not imported: no import would pull it in.
    expect(files).toContain('package/dist/plugins/dkim-verify/worker.js');
    expect(files).toContain('package/config.schema.json');
    expect(files.filter((f) => /\.test\.|\/test\/|\/bench\/|(?<!\.d)\.ts$/.test(f))).toEqual([]);
  });

  it('imports at run time only its dependencies and Node built-ins', async () => {
    const installed = join(app, 'node_modules', 'mailframe');
    const pkg = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    // Its own name too: the init templates hold `from 'mailframe'` lines for the project they write.
    const allowed = new Set([...Object.keys(pkg.dependencies), 'mailframe']);
    const foreign = new Set<string>();
    const names = await readdir(join(installed, 'dist'), { recursive: true });
    for (const name of names.filter((n) => n.endsWith('.js'))) {
      const text = await readFile(join(installed, 'dist', name), 'utf8');
      for (const m of text.matchAll(IMPORT_SPECIFIER)) {
        const spec = m[1] ?? m[2] ?? m[3] ?? '';
        if (spec.startsWith('.')) continue;
        if (spec.startsWith('node:')) continue;
        const root = spec.startsWith('@')
          ? spec.split('/').slice(0, 2).join('/')
          : (spec.split('/')[0] ?? spec);
        if (!allowed.has(root)) foreign.add(`${name}: ${spec}`);
      }
    }
    expect([...foreign]).toEqual([]);
  });

  it('runs a bundled plugin, a plugin package and an in-code plugin under plain node, and queues a message', async () => {
    await writeFile(
      join(app, 'mailframe.json'),
      JSON.stringify({
        $schema: './node_modules/mailframe/config.schema.json',
        hostname: 'mx.app.test',
        dataDir: 'var',
        listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
        plugins: [
          { plugin: 'enhanced-status-codes' },
          { plugin: 'rcpt-local', config: { domains: ['app.test'] } },
          { plugin: 'mailframe-plugin-stamp', config: { value: 'from-the-package' } },
          { plugin: 'in-code' },
          { plugin: 'queue-fs' },
        ],
      }),
    );
    await writeFile(
      join(app, 'server.js'),
      `import { readFileSync } from 'node:fs';
import { createServer, definePlugin } from 'mailframe';

const inCode = definePlugin({
  name: 'in-code',
  schema: { type: 'object', properties: {}, additionalProperties: false },
  register(api) {
    api.hooks.headers.tap((fields) => [...fields, 'X-In-Code: yes']);
  },
});
const config = JSON.parse(readFileSync('mailframe.json', 'utf8'));
const server = await createServer({ config, plugins: [inCode] });
process.stdout.write(JSON.stringify({ node: process.version, addresses: server.addresses() }) + '\\n');
process.on('SIGTERM', () => server.close().then(() => process.exit(0)));
`,
    );
    const { child, firstLine, output } = await startProcess('node', ['server.js'], app);
    try {
      const started = JSON.parse(firstLine) as { node: string; addresses: Array<{ port: number }> };
      expect(started.node).toMatch(/^v24\./);
      const c = await connectClient(started.addresses[0]?.port ?? 0);
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<sender@client.example>', 250);
      await c.expect('RCPT TO:<someone@elsewhere.example>', 550, '5.7.1');
      await c.expect('RCPT TO:<alice@app.test>', 250);
      await c.expect('DATA', 354);
      const done = await c.sendData('Subject: acceptance\r\n\r\nhello from the tarball');
      await c.close();
      expect(done.code, output()).toBe(250);
      const id = /queued as (\S+)/.exec(done.lines.join(' '))?.[1];
      expect(id).toBeDefined();

      // The installed CLI finds it (through the running server's control socket).
      const shown = await must('node_modules/.bin/mailframe', ['queue', 'show', id ?? '', '--json'], app);
      expect(JSON.parse(shown.stdout)).toMatchObject({ id });
      const stored = await readQueuedMessage(join(app, 'var'), id ?? '');
      expect(stored).toContain('X-Stamp: from-the-package');
      expect(stored).toContain('X-In-Code: yes');
      expect(stored).toContain('hello from the tarball');
    } finally {
      expect(await stopProcess(child), output()).toBe(0);
    }
  }, 60_000);

  it("verifies DKIM in dkim-verify's worker thread, loaded from the built package", async () => {
    // If the thread could not load its module, the message in flight would get temperror, or (the thread
    // failed first) the event loop would verify it after an error line on stdout: either fails this.
    const script = `import { createLogger } from 'mailframe';
import { startTestServer } from 'mailframe/testkit';
const t = await startTestServer({
  dns: {},
  logger: createLogger({ level: 'warn', pretty: false }),
  plugins: [['dkim-verify', { workers: 1 }], 'auth-results', ['rcpt-local', { domains: ['example.net'] }]],
});
const c = await t.connect();
await c.expect('EHLO client.example', 250);
await c.expect('MAIL FROM:<a@example.org>', 250);
await c.expect('RCPT TO:<b@example.net>', 250);
await c.expect('DATA', 354);
const field = 'DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=gone; h=from; bh=AAAA; b=AAAA';
const reply = await c.sendData(field + '\\r\\nFrom: a@example.org\\r\\n\\r\\nhi\\r\\n');
await c.close();
const [queued] = await t.waitForMessages(1);
await t.close();
process.stdout.write(JSON.stringify({ code: reply.code, dkim: /dkim=\\w+/.exec(queued.text)?.[0] }) + '\\n');
`;
    await writeFile(join(app, 'dkim-threads.js'), script);
    const r = await must('node', ['dkim-threads.js'], app);
    const lines = r.stdout.split('\n').filter(Boolean);
    // No key published for s=gone: permerror, from the thread, and nothing logged.
    expect(lines, r.stdout).toEqual([JSON.stringify({ code: 250, dkim: 'dkim=permerror' })]);
  });

  it('logs JSON when pretty logs are asked for but the optional pino-pretty is not installed', async () => {
    const script =
      "import { createLogger } from 'mailframe'; createLogger({ level: 'info', pretty: true }).info('plain');";
    const r = await must('node', ['--input-type=module', '-e', script], app);
    expect(JSON.parse(r.stdout)).toMatchObject({ level: 30, msg: 'plain' });
  });

  it('writes an editor schema that knows the plugin package settings (mailframe schema)', async () => {
    const r = await must('node_modules/.bin/mailframe', ['schema'], app);
    expect(r.stdout).toContain('mailframe-plugin-stamp');
    const schema = JSON.parse(await readFile(join(app, 'mailframe.schema.json'), 'utf8')) as object;
    const validate = createAjv().compile(schema);
    const config = JSON.parse(await readFile(join(app, 'mailframe.json'), 'utf8')) as Record<string, unknown>;
    expect(validate(config), JSON.stringify(validate.errors)).toBe(true);
    const misspelt = { ...config, plugins: [{ plugin: 'mailframe-plugin-stamp', config: { valeu: 'x' } }] };
    expect(validate(misspelt)).toBe(false);
    expect(JSON.stringify(validate.errors)).toContain('valeu');
  });

  it('type-checks an application against the shipped declarations, and a type error fails', async () => {
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'es2024',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          verbatimModuleSyntax: true,
          noEmit: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [TYPE_ROOTS],
        },
        files: ['good.ts'],
      }),
    );
    await writeFile(join(app, 'good.ts'), GOOD_TS);
    await writeFile(
      join(app, 'tsconfig.bad.json'),
      JSON.stringify({ extends: './tsconfig.json', files: ['bad.ts'] }),
    );
    await writeFile(join(app, 'bad.ts'), BAD_TS);

    const good = await run('tsc', ['-p', 'tsconfig.json'], app);
    expect(good.stdout + good.stderr).toBe('');
    expect(good.code).toBe(0);
    const bad = await run('tsc', ['-p', 'tsconfig.bad.json'], app);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toMatch(/bad\.ts\(\d+,\d+\): error TS2551: Property 'domain' does not exist/);
    expect(bad.stdout).toMatch(/bad\.ts\(\d+,\d+\): error TS2345/);
  }, 120_000);
});

describe('mailframe init, from the installed package', () => {
  it('writes a project that installs from the tarball and passes its own npm test', async () => {
    const project = join(packed?.work ?? '', 'my-mta');
    const made = await must('node_modules/.bin/mailframe', ['init', project, '--mx'], app);
    expect(made.stdout).toContain('npm install');
    // The generated package.json asks for mailframe from the registry: point it at the tarball.
    await npmInstall(project, [packed?.tarball ?? '']);
    const test = await run('npm', ['test'], project, 180_000);
    expect(test.code, test.stdout + test.stderr).toBe(0);
    expect(test.stdout).toMatch(/\bpass [1-9]/);
    expect(test.stdout).toMatch(/\bfail 0\b/);
    const typecheck = await run('npm', ['run', 'typecheck'], project, 120_000);
    expect(typecheck.code, typecheck.stdout + typecheck.stderr).toBe(0);
    // Its own plugin (TypeScript, loaded by path under plain node) reaches the editor schema.
    await must('node_modules/.bin/mailframe', ['schema'], project);
    const schema = await readFile(join(project, 'mailframe.schema.json'), 'utf8');
    expect(schema).toContain('./plugins/local-policy/index.ts');
    expect(schema).toContain('blockedSenderDomains');
  }, 480_000);
});

/** `import ... from 'x'` / `export ... from 'x'` / `import 'x'` at a line start, and `import('x')`. */
const IMPORT_SPECIFIER =
  /^\s*(?:import|export)\b[^;'"]*?\bfrom\s*'([^']+)'|^\s*import\s*'([^']+)'|\bimport\(\s*'([^']+)'\s*\)/gm;

/** The message file queue-fs keeps: found by its id anywhere under the data directory. */
async function readQueuedMessage(dataDir: string, id: string): Promise<string> {
  const names = await readdir(dataDir, { recursive: true });
  const hits = names.filter((n) => n.includes(id));
  const texts = await Promise.all(hits.map((n) => readFile(join(dataDir, n), 'utf8').catch(() => '')));
  return texts.join('\n');
}

const GOOD_TS = `import { createServer, definePlugin, type MailServer, Replies, type Reply, reply, Stage } from 'mailframe';
import { startTestServer, type TestServer } from 'mailframe/testkit';
import type {} from 'mailframe/plugins/auth';
import stamp from 'mailframe-plugin-stamp';
import Type from 'typebox';

declare module 'mailframe' {
  interface SessionNotes {
    appChecked?: boolean;
  }
}

export const plugin = definePlugin({
  name: 'typed',
  schema: Type.Object({ domains: Type.Array(Type.String(), { default: [] }) }),
  register(api, config) {
    const blocked: readonly string[] = config.domains;
    api.hooks.ehlo.tap((session) => {
      session.notes.appChecked = true;
      return undefined;
    });
    api.hooks.mail.tap((_tx, from): Reply | undefined => {
      const domain = from.address?.asciiDomain;
      return domain && blocked.includes(domain) ? reply(550, '5.7.1', 'no') : undefined;
    }, { stage: Stage.EARLY });
    // SessionNotes.auth comes from the bundled auth plugin's declarations (mailframe/plugins/auth).
    api.hooks.rcpt.tap((tx) => (tx.session.notes.auth?.user === 'alice' ? Replies.recipientOk : undefined));
  },
});

export async function embedded(): Promise<MailServer> {
  return createServer({ config: { listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }] }, plugins: [plugin, stamp] });
}

export async function tested(): Promise<TestServer> {
  return startTestServer({ plugins: [[plugin, { domains: ['spam.example'] }], [stamp, { value: 'x' }]] });
}
`;

const BAD_TS = `import { definePlugin, reply } from 'mailframe';
import Type from 'typebox';

export default definePlugin({
  name: 'bad',
  schema: Type.Object({ domains: Type.Array(Type.String()) }),
  register(api, config) {
    api.log.info(config.domain);
    api.hooks.mail.tap(() => reply('550', '5.7.1', 'no'));
  },
});
`;
