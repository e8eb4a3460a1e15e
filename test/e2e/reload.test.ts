/**
 * Config reload: a session open across a reload finishes under the old
 * configuration while new sessions get the new one; a bad configuration or one
 * that cannot be applied at runtime changes nothing and says why; listeners
 * open and close; SIGHUP reloads `mailframe start`'s file.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Type from 'typebox';
import { beforeEach, describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { Replies } from '../../core/reply.ts';
import { MailServer } from '../../core/server.ts';
import { connectClient, type TestServer } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';
import { adminTokensFile } from './admin-harness.ts';

const scope = useScope();

/** Adds a header naming its config; records its instances' start and close. */
const events: string[] = [];
const stamp = definePlugin({
  name: 'stamp',
  reloadable: true,
  schema: Type.Object({ tag: Type.String() }, { additionalProperties: false }),
  register(api, config) {
    events.push(`register ${config.tag}`);
    api.hooks.headers.tap((fields) => [...fields, `X-Stamp: ${config.tag}`]);
    api.onClose(() => {
      events.push(`close ${config.tag}`);
    });
  },
});
/** A plugin that cannot be replaced at runtime (no `reloadable`). */
const pinned = definePlugin({
  name: 'pinned',
  schema: Type.Object({ n: Type.Integer({ default: 1 }) }, { additionalProperties: false }),
  register(api) {
    api.onClose(() => {
      events.push('close pinned');
    });
  },
});

type Config = { plugins: Array<{ plugin: string; config?: Record<string, unknown> }> } & Record<
  string,
  unknown
>;

/** The server's current configuration as a mutable copy, to edit and reload. */
function current(t: TestServer): Config {
  return structuredClone(t.server.config) as unknown as Config;
}

function entry(config: Config, name: string): { plugin: string; config?: Record<string, unknown> } {
  const e = config.plugins.find((p) => p.plugin === name);
  if (!e) throw new Error(`no ${name}`);
  return e;
}

async function send(t: TestServer, port = t.port): Promise<void> {
  const c = await connectClient(port);
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<a@b.example>', 250);
  await c.expect('RCPT TO:<x@example.com>', 250);
  await c.expect('DATA', 354);
  expect((await c.sendData('Subject: t\r\n\r\nbody\r\n')).code).toBe(250);
  await c.expect('QUIT', 221);
  await c.close();
}

beforeEach(() => {
  events.length = 0;
});

describe('reload', () => {
  it('lets an open session finish under the old config while new sessions get the new one', async () => {
    const t = await scope.start({
      plugins: [[stamp, { tag: 'old' }], pinned, ['rcpt-local', { domains: ['example.com'] }]],
    });
    const open = await scope.connect(t);
    await open.expect('EHLO client.example', 250);
    await open.expect('MAIL FROM:<a@b.example>', 250);
    await open.expect('RCPT TO:<x@example.com>', 250);

    const next = current(t);
    entry(next, 'stamp').config = { tag: 'new' };
    const result = await t.server.reload({ config: next });
    expect(result).toEqual({
      ok: true,
      generation: 2,
      plugins: {
        kept: ['enhanced-status-codes', 'pipelining', 'pinned', 'rcpt-local', 'testkit-capture'],
        added: [],
        replaced: ['stamp'],
        removed: [],
      },
      listeners: { kept: ['smtp'], opened: [], closed: [] },
    });
    expect(t.server.generation).toBe(2);

    await send(t);
    await open.expect('DATA', 354);
    expect((await open.sendData('Subject: t\r\n\r\nbody\r\n')).code).toBe(250);
    const [fresh, old] = await t.waitForMessages(2);
    expect(fresh?.text).toContain('X-Stamp: new');
    expect(fresh?.text).not.toContain('X-Stamp: old');
    expect(old?.text).toContain('X-Stamp: old');
    expect(old?.text).not.toContain('X-Stamp: new');
    // The old instance closes only once the last session of its generation has ended.
    expect(events).toEqual(['register old', 'register new']);
    await open.expect('QUIT', 221);
    await open.waitClosed();
    for (let i = 0; i < 1000 && events.length < 3; i++) await new Promise((r) => setImmediate(r));
    expect(events).toEqual(['register old', 'register new', 'close old']);
    // The carried-over plugin is one instance: closed once, at shutdown.
    await t.close();
    expect(events.slice(3)).toEqual(['close pinned', 'close new']);
  });

  it('refuses a bad configuration, naming every error by JSON pointer, and keeps the old one', async () => {
    const t = await scope.start({
      plugins: [
        [stamp, { tag: 'old' }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const next = current(t);
    entry(next, 'stamp').config = { tag: 5 };
    next['limits'] = { maxRecipients: 'many' };
    const result = await t.server.reload({ config: next });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toContain('/limits/maxRecipients: must be integer');
    expect(result.errors).toContain('/plugins/2/config/tag: must be string (plugin stamp)');
    expect(t.server.generation).toBe(1);
    await send(t);
    expect((await t.waitForMessages(1))[0]?.text).toContain('X-Stamp: old');
    expect(events).toEqual(['register old']);
  });

  it('refuses what cannot change at runtime, naming the plugin and the setting', async () => {
    const t = await scope.start({
      plugins: [[stamp, { tag: 'old' }], pinned, ['rcpt-local', { domains: ['example.com'] }]],
    });
    const next = current(t);
    entry(next, 'stamp').config = { tag: 'new' };
    entry(next, 'pinned').config = { n: 2 };
    next['hostname'] = 'other.example';
    const result = await t.server.reload({ config: next });
    expect(result).toEqual({
      ok: false,
      errors: [
        '/hostname: cannot change while the server runs; restart needed (plugins and queued messages hold the host name the server started with)',
        '/plugins/3: pinned: settings changed; restart needed (it cannot be replaced while the server runs)',
      ],
    });
    const dropped = current(t);
    dropped.plugins = dropped.plugins.filter((p) => p.plugin !== 'pinned');
    const second = await t.server.reload({ config: dropped });
    expect(second).toEqual({
      ok: false,
      errors: ['/plugins: pinned: removed; restart needed (it cannot be dropped while the server runs)'],
    });
    // Nothing was registered or closed by the refused reloads.
    expect(events).toEqual(['register old']);
    await send(t);
    expect((await t.waitForMessages(1))[0]?.text).toContain('X-Stamp: old');
  });

  it('opens added listeners and closes removed ones, keeping unchanged sockets', async () => {
    const t = await scope.start({ plugins: [['rcpt-local', { domains: ['example.com'] }]] });
    const next = current(t) as Config & { listeners: Array<Record<string, unknown>> };
    next.listeners.push({ name: 'extra', host: '127.0.0.1', port: 0 });
    const added = await t.server.reload({ config: next });
    expect(added.ok && added.listeners).toEqual({ kept: ['smtp'], opened: ['extra'], closed: [] });
    const extra = t.server.addresses().find((a) => a.name === 'extra');
    expect(t.server.addresses().find((a) => a.name === 'smtp')?.port).toBe(t.port);
    await send(t, extra?.port);
    await send(t);

    const back = current(t) as Config & { listeners: Array<{ name: string }> };
    back.listeners = back.listeners.filter((l) => l.name !== 'extra');
    const removed = await t.server.reload({ config: back });
    expect(removed.ok && removed.listeners).toEqual({ kept: ['smtp'], opened: [], closed: ['extra'] });
    expect(t.server.addresses().map((a) => a.name)).toEqual(['smtp']);
    await expect(connectClient(extra?.port ?? 0)).rejects.toThrow(/ECONNREFUSED/);
    await send(t);
  });
});

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface LogLine {
  msg: string;
  address?: { port: number } | string;
  port?: number;
  errors?: string[];
  generation?: number;
}

/** `mailframe start -c FILE` in a child process, its JSON log lines collected. */
async function startCli(file: string, cwd: string, waitListening = true) {
  const child = spawn(
    join(ROOT, 'node_modules/.bin/node'),
    [join(ROOT, 'bin/mailframe.js'), 'start', '-c', file],
    {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const exited = once(child, 'exit');
  scope.defer(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const lines: LogLine[] = [];
  let partial = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
  });
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    const parts = (partial + s).split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) if (l.startsWith('{')) lines.push(JSON.parse(l));
  });
  /** Wait (bounded: 15 s) until `check` holds. */
  const until = async (check: () => boolean, what: string) => {
    for (let i = 0; i < 1500 && !check(); i++) await new Promise((ok) => setTimeout(ok, 10));
    if (!check()) throw new Error(`still waiting for ${what}; stderr: ${stderr}`);
  };
  const listeningPort = () => {
    const address = lines.find((l) => l.msg === 'listening')?.address;
    return typeof address === 'object' ? address.port : 0;
  };
  if (waitListening) await until(() => lines.some((l) => l.msg === 'listening'), 'listening');
  const port = listeningPort();
  const rcpt = async (to: string, code: number) => {
    const c = await connectClient(port);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect(`RCPT TO:<${to}>`, code);
    await c.close();
  };
  return { child, exited, lines, until, port, rcpt, listeningPort };
}

async function configFile(): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-reload-'));
  scope.defer(() => rm(dir, { recursive: true, force: true }));
  return { dir, file: join(dir, 'mailframe.json') };
}

function cliConfig(
  domains: string[],
  extra: Record<string, unknown> = {},
  plugins: Array<Record<string, unknown>> = [],
): string {
  return JSON.stringify({
    hostname: 'mx.test.example',
    dataDir: './var',
    log: { level: 'info', pretty: false },
    listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
    plugins: [
      { plugin: 'enhanced-status-codes' },
      { plugin: 'rcpt-local', config: { domains } },
      ...plugins,
      { plugin: 'queue-discard' },
    ],
    ...extra,
  });
}

describe('mailframe start and SIGHUP', () => {
  it('reloads the file on SIGHUP, refuses a bad one with every error logged, and keeps serving', async () => {
    const { dir, file } = await configFile();
    await writeFile(file, cliConfig(['one.example']));
    const r = await startCli(file, dir);
    await r.rcpt('x@one.example', 250);
    await r.rcpt('x@two.example', 550);

    // A session open across the reload keeps the old recipient table.
    const open = await connectClient(r.port);
    await open.expect('EHLO client.example', 250);
    await writeFile(file, cliConfig(['two.example']));
    r.child.kill('SIGHUP');
    await r.until(() => r.lines.some((l) => l.msg === 'configuration reloaded'), 'the reload');
    expect(r.lines.find((l) => l.msg === 'configuration reloaded')?.generation).toBe(2);
    await r.rcpt('x@two.example', 250);
    await r.rcpt('x@one.example', 550);
    await open.expect('MAIL FROM:<a@b.example>', 250);
    await open.expect('RCPT TO:<x@one.example>', 250);
    await open.close();

    // A bad file: every error in the log, the running configuration stays.
    await writeFile(file, cliConfig(['two.example'], { limits: { maxRecipients: 0 }, bogus: true }));
    r.child.kill('SIGHUP');
    await r.until(() => r.lines.some((l) => l.msg.startsWith('configuration not reloaded')), 'the refusal');
    expect(r.lines.find((l) => l.msg.startsWith('configuration not reloaded'))?.errors).toEqual([
      '/bogus: is not a known setting',
      '/limits/maxRecipients: must be >= 1',
    ]);
    await r.rcpt('x@two.example', 250);
    r.child.kill('SIGTERM');
    expect((await r.exited)[0]).toBe(0);
  });
});

describe('mailframe start: SIGHUP during start-up', () => {
  it('survives a SIGHUP while its plugins start, and reloads once it listens', async () => {
    const { dir, file } = await configFile();
    // A plugin file whose start waits for the file `go` (so the signal lands during start-up).
    await writeFile(
      join(dir, 'slow-start.mjs'),
      `import { existsSync } from 'node:fs';
export default {
  name: 'slow-start',
  schema: { type: 'object', additionalProperties: false },
  register(api) {
    api.onStart(async () => {
      api.log.info('waiting for go');
      while (!existsSync(${JSON.stringify(join(dir, 'go'))})) await new Promise((r) => setTimeout(r, 20));
    });
  },
};
`,
    );
    await writeFile(file, cliConfig(['one.example'], {}, [{ plugin: './slow-start.mjs' }]));
    const r = await startCli(file, dir, false);
    await r.until(() => r.lines.some((l) => l.msg === 'waiting for go'), 'the slow start');
    await writeFile(file, cliConfig(['two.example'], {}, [{ plugin: './slow-start.mjs' }]));
    r.child.kill('SIGHUP');
    await r.until(() => r.lines.some((l) => l.msg === 'reload requested'), 'the signal noted');
    await writeFile(join(dir, 'go'), '');
    await r.until(() => r.lines.some((l) => l.msg === 'configuration reloaded'), 'the reload');
    const port = r.listeningPort();
    const c = await connectClient(port);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RCPT TO:<x@two.example>', 250);
    await c.close();
    r.child.kill('SIGTERM');
    expect((await r.exited)[0]).toBe(0);
  });
});

describe('POST /api/reload (admin-http)', () => {
  it('reloads over HTTP with a token, refuses without one or with a wrong one, and answers 422 with every error', async () => {
    const { dir, file } = await configFile();
    const { token, path } = await adminTokensFile(dir);
    const admin = [
      { plugin: 'admin-http', config: { port: 0, tokensFile: path, watch: false, console: false } },
    ];
    await writeFile(file, cliConfig(['one.example'], {}, admin));
    const r = await startCli(file, dir);
    await r.until(() => r.lines.some((l) => l.msg === 'admin API listening'), 'the admin API');
    const url = `http://127.0.0.1:${r.lines.find((l) => l.msg === 'admin API listening')?.port}/api/reload`;
    await writeFile(file, cliConfig(['two.example'], {}, admin));

    const none = await fetch(url, { method: 'POST' });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer realm="mailframe"');
    const wrong = await fetch(url, { method: 'POST', headers: { authorization: 'Bearer not-a-token' } });
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: string }).error).toBe('unauthorized');
    // Refused requests changed nothing.
    await r.rcpt('x@one.example', 250);
    expect(r.lines.some((l) => l.msg === 'configuration reloaded')).toBe(false);

    const ok = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({
      ok: true,
      generation: 2,
      plugins: {
        kept: ['enhanced-status-codes', 'admin-http', 'queue-discard'],
        added: [],
        replaced: ['rcpt-local'],
        removed: [],
      },
      listeners: { kept: ['smtp'], opened: [], closed: [] },
    });
    await r.rcpt('x@two.example', 250);
    await r.rcpt('x@one.example', 550);

    await writeFile(
      file,
      cliConfig(['two.example'], { dataDir: './elsewhere', limits: { maxErrors: -1 } }, admin),
    );
    const bad = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(bad.status).toBe(422);
    expect(await bad.json()).toEqual({ ok: false, errors: ['/limits/maxErrors: must be >= 1'] });
    await writeFile(file, cliConfig(['two.example'], { dataDir: './elsewhere' }, admin));
    const fixed = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(fixed.status).toBe(422);
    expect(((await fixed.json()) as { errors: string[] }).errors).toEqual([
      '/dataDir: cannot change while the server runs; restart needed (the queue and spool live there)',
    ]);
    await r.rcpt('x@two.example', 250);
    r.child.kill('SIGTERM');
    expect((await r.exited)[0]).toBe(0);
  });
});

/** A TCP port free now on 127.0.0.1 (listeners of these tests need a known port). */
async function freePort(): Promise<number> {
  const probe = createNetServer();
  await new Promise<void>((ok) => probe.listen({ host: '127.0.0.1', port: 0 }, () => ok()));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((ok) => probe.close(ok));
  return port;
}

/** Its start waits for `gate` when its `wait` setting is true (a reload caught half way). */
let gate: { entered: () => void; wait: Promise<void> } | undefined;
const gated = definePlugin({
  name: 'gated',
  reloadable: true,
  schema: Type.Object({ wait: Type.Boolean() }, { additionalProperties: false }),
  register(api, config) {
    api.onStart(async () => {
      if (!config.wait || !gate) return;
      gate.entered();
      await gate.wait;
    });
    api.onClose(() => {
      events.push(`close gated ${config.wait}`);
    });
  },
});

describe('reload against shutdown and failure', () => {
  it('a shutdown while a reload is under way leaves no listener or plugin of the new configuration open', async () => {
    let release = () => {};
    let entered = () => {};
    const inside = new Promise<void>((ok) => {
      entered = ok;
    });
    gate = {
      entered,
      wait: new Promise<void>((ok) => {
        release = ok;
      }),
    };
    scope.defer(() => {
      gate = undefined;
    });
    const t = await scope.start({
      plugins: [
        [gated, { wait: false }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const port = await freePort();
    const next = current(t) as Config & { listeners: Array<Record<string, unknown>> };
    entry(next, 'gated').config = { wait: true };
    next.listeners.push({ name: 'extra', host: '127.0.0.1', port });
    const reloading = t.server.reload({ config: next });
    await inside;
    const closing = t.server.close();
    release();
    const result = await reloading;
    await closing;
    expect(result.ok).toBe(false);
    // Both instances closed, each once; nothing listens on the new listener's port.
    expect(events.sort()).toEqual(['close gated false', 'close gated true']);
    await expect(connectClient(port)).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('reload and metrics', () => {
  /** `mailframe_hook_calls_total` of one plugin and hook, as a scrape reads it (0 when absent). */
  async function hookCalls(t: TestServer, plugin: string, hook: string): Promise<number> {
    const text = (await t.server.registry.service('metrics')?.text()) ?? '';
    const line = text
      .split('\n')
      .find((l) => l.startsWith(`mailframe_hook_calls_total{plugin="${plugin}",hook="${hook}"}`));
    return line ? Number(line.split(' ').pop()) : 0;
  }

  it('a metrics plugin a reload added counts only the sessions it saw open', async () => {
    const t = await scope.start({ plugins: [['rcpt-local', { domains: ['example.com'] }]] });
    const before = await scope.connect(t);
    await before.expect('EHLO client.example', 250);
    const next = current(t);
    next.plugins.unshift({ plugin: 'metrics', config: { port: 0, processMetrics: false } });
    expect((await t.server.reload({ config: next })).ok).toBe(true);
    const after = await scope.connect(t);
    await after.expect('EHLO client.example', 250);
    const open = async () => {
      const text = (await t.server.registry.service('metrics')?.text()) ?? '';
      const line = text.split('\n').find((l) => l.startsWith('mailframe_connections_open{listener="smtp"}'));
      return line ? Number(line.split(' ').pop()) : 0;
    };
    expect(await open()).toBe(1);
    // The session begun before the plugin was there ends: the gauge does not go below what it saw.
    await before.expect('QUIT', 221);
    await before.waitClosed();
    for (let i = 0; i < 100 && t.server.connections > 1; i++) await new Promise((r) => setImmediate(r));
    expect(await open()).toBe(1);
    await after.expect('QUIT', 221);
    await after.waitClosed();
    for (let i = 0; i < 100 && t.server.connections > 0; i++) await new Promise((r) => setImmediate(r));
    expect(await open()).toBe(0);
  });

  it('keeps counting a replaced plugin where its old instance left off, before and after it closes', async () => {
    const t = await scope.start({
      plugins: [
        ['metrics', { port: 0, processMetrics: false }],
        [stamp, { tag: 'old' }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    await send(t);
    await send(t);
    expect(await hookCalls(t, 'stamp', 'headers')).toBe(2);
    // A session of the old generation keeps its instance open for a while.
    const open = await scope.connect(t);
    await open.expect('EHLO client.example', 250);
    const next = current(t);
    entry(next, 'stamp').config = { tag: 'new' };
    expect((await t.server.reload({ config: next })).ok).toBe(true);
    await send(t);
    expect(await hookCalls(t, 'stamp', 'headers')).toBe(3);
    await open.expect('QUIT', 221);
    await open.waitClosed();
    for (let i = 0; i < 1000 && !events.includes('close old'); i++) await new Promise((r) => setImmediate(r));
    expect(events).toContain('close old');
    // The old instance closed: its calls still count (a counter never goes back).
    expect(await hookCalls(t, 'stamp', 'headers')).toBe(3);
    expect(t.server.hookMetrics().filter((m) => m.plugin === 'stamp' && m.hook === 'headers')).toEqual([
      { plugin: 'stamp', hook: 'headers', calls: 3, failures: 0, timeouts: 0, faults: 0 },
    ]);
  });
});

describe('reload: listeners by name', () => {
  it('keeps the socket of a listener whose only change is its $comment', async () => {
    const t = await scope.start({ plugins: [['rcpt-local', { domains: ['example.com'] }]] });
    const next = current(t) as Config & { listeners: Array<Record<string, unknown>> };
    (next.listeners[0] as Record<string, unknown>)['$comment'] = 'the MX listener';
    const result = await t.server.reload({ config: next });
    expect(result.ok && result.listeners).toEqual({ kept: ['smtp'], opened: [], closed: [] });
    await send(t);
  });

  it('a reload before the server listens leaves the listeners to listen()', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mailframe-reload-'));
    scope.defer(() => rm(dir, { recursive: true, force: true }));
    const [smtp, extra] = [await freePort(), await freePort()];
    const config = {
      hostname: 'mx.test.example',
      dataDir: dir,
      listeners: [{ name: 'smtp', host: '127.0.0.1', port: smtp }],
      plugins: [{ plugin: 'rcpt-local', config: { domains: ['example.com'] } }, { plugin: 'queue-discard' }],
    };
    const server = await MailServer.create({ config });
    scope.defer(() => server.close(0));
    const next = {
      ...config,
      listeners: [...config.listeners, { name: 'extra', host: '127.0.0.1', port: extra }],
    };
    expect((await server.reload({ config: next })).ok).toBe(true);
    expect(server.addresses()).toEqual([]);
    const listening = await server.listen();
    expect(listening.map((a) => [a.name, a.port])).toEqual([
      ['smtp', smtp],
      ['extra', extra],
    ]);
    const c = await connectClient(extra);
    await c.expect('EHLO client.example', 250);
    await c.expect('QUIT', 221);
  });

  it('renames a listener on the same port: the old name is closed before the new one opens', async () => {
    const port = await freePort();
    const t = await scope.start({
      config: { listeners: [{ name: 'smtp', host: '127.0.0.1', port }] },
      plugins: [['rcpt-local', { domains: ['example.com'] }]],
    });
    // A rename in a reload that fails (another listener's port is taken): the old name comes back.
    const taken = createNetServer();
    await new Promise<void>((ok) => taken.listen({ host: '127.0.0.1', port: 0 }, () => ok()));
    scope.defer(() => new Promise((ok) => taken.close(ok)));
    const failing = current(t) as Config & { listeners: Array<Record<string, unknown>> };
    (failing.listeners[0] as Record<string, unknown>)['name'] = 'mx';
    failing.listeners.push({ name: 'extra', host: '127.0.0.1', port: (taken.address() as AddressInfo).port });
    expect((await t.server.reload({ config: failing })).ok).toBe(false);
    expect(t.server.addresses()).toEqual([{ name: 'smtp', host: '127.0.0.1', port }]);
    await send(t, port);

    const next = current(t) as Config & { listeners: Array<Record<string, unknown>> };
    (next.listeners[0] as Record<string, unknown>)['name'] = 'mx';
    const result = await t.server.reload({ config: next });
    expect(result.ok && result.listeners).toEqual({ kept: [], opened: ['mx'], closed: ['smtp'] });
    expect(t.server.addresses()).toEqual([{ name: 'mx', host: '127.0.0.1', port }]);
    await send(t, port);
  });
});

declare module '../../core/plugin.ts' {
  interface Services {
    /** The test plugin `allow-list`'s service. */
    'reload-test-allow': { allows(address: string): boolean };
  }
}

/** Provides a service: the recipients it allows. */
const allowList = definePlugin({
  name: 'allow-list',
  reloadable: true,
  schema: Type.Object({ addresses: Type.Array(Type.String()) }, { additionalProperties: false }),
  register(api, config) {
    api.provide('reload-test-allow', { allows: (address) => config.addresses.includes(address) });
  },
});
/** Reads that service at each RCPT (as dnsbl reads dnswl's, the queue dkim-sign's); carried over by reloads. */
const gatekeeper = definePlugin({
  name: 'gatekeeper',
  schema: Type.Object({}),
  register(api) {
    api.hooks.rcpt.tap((_tx, to) =>
      api.service('reload-test-allow')?.allows(to.address.address) ? Replies.recipientOk : undefined,
    );
  },
});

describe('reload: services', () => {
  async function rcpt(t: TestServer, to: string, code: number): Promise<void> {
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect(`RCPT TO:<${to}>`, code);
    await c.expect('QUIT', 221);
  }

  it('a plugin carried over reads the services of the plugins a reload added, replaced or removed', async () => {
    const t = await scope.start({ plugins: [gatekeeper, [allowList, { addresses: [] }]] });
    await rcpt(t, 'x@example.com', 550);
    const withList = (addresses: string[] | undefined): Config => {
      const next = current(t);
      next.plugins = next.plugins.filter((p) => p.plugin !== 'allow-list');
      if (addresses) next.plugins.push({ plugin: 'allow-list', config: { addresses } });
      return next;
    };
    const removed = await t.server.reload({ config: withList(undefined) });
    expect(removed.ok && removed.plugins.removed).toEqual(['allow-list']);
    await rcpt(t, 'x@example.com', 550);
    const added = await t.server.reload({ config: withList(['x@example.com']) });
    expect(added.ok && added.plugins.added).toEqual(['allow-list']);
    expect(added.ok && added.plugins.kept).toContain('gatekeeper');
    await rcpt(t, 'x@example.com', 250);
    const replaced = await t.server.reload({ config: withList(['y@example.com']) });
    expect(replaced.ok && replaced.plugins.replaced).toEqual(['allow-list']);
    await rcpt(t, 'y@example.com', 250);
    await rcpt(t, 'x@example.com', 550);
  });
});

/** Not reloadable, with settings of several keys. */
const twoKeys = definePlugin({
  name: 'two-keys',
  schema: Type.Object(
    { a: Type.Integer({ default: 1 }), b: Type.Object({ c: Type.Integer(), d: Type.Integer() }) },
    { additionalProperties: false },
  ),
  register() {},
});

describe('reload: unchanged entries', () => {
  it('carries over a plugin whose settings are the same written in another key order', async () => {
    const t = await scope.start({ plugins: [[twoKeys, { a: 2, b: { c: 3, d: 4 } }]] });
    const next = current(t);
    entry(next, 'two-keys').config = { b: { d: 4, c: 3 }, a: 2 };
    const result = await t.server.reload({ config: next });
    expect(result.ok && result.plugins.kept).toContain('two-keys');
  });
});

describe('reload: a plugin that does not start', () => {
  it('refuses a reload whose new plugin does not finish starting within timeouts.pluginStart, and reloads again', async () => {
    let entered = () => {};
    const inside = new Promise<void>((ok) => {
      entered = ok;
    });
    // Never released: this start hangs.
    gate = { entered, wait: new Promise<void>(() => {}) };
    scope.defer(() => {
      gate = undefined;
    });
    const t = await scope.start({
      config: { timeouts: { pluginStart: 200 } },
      plugins: [
        [gated, { wait: false }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const hanging = current(t);
    entry(hanging, 'gated').config = { wait: true };
    const refused = await t.server.reload({ config: hanging });
    await inside;
    expect(refused).toEqual({
      ok: false,
      errors: ['Plugin "gated" failed to start: Plugin "gated" did not finish starting within 200 ms'],
    });
    expect(t.server.generation).toBe(1);
    expect(events).toEqual(['close gated true']);
    // The next reload is not stuck behind it.
    const next = current(t);
    entry(next, 'rcpt-local').config = { domains: ['example.org'] };
    expect((await t.server.reload({ config: next })).ok).toBe(true);
    expect(t.server.generation).toBe(2);
  });
});

describe('reload: a plugin whose register times out', () => {
  it('leaves no observer or close callback of that instance behind once its register goes on', async () => {
    let finish = () => {};
    let registered = () => {};
    const done = new Promise<void>((ok) => {
      registered = ok;
    });
    const late = definePlugin({
      name: 'late',
      reloadable: true,
      schema: Type.Object({ slow: Type.Boolean() }, { additionalProperties: false }),
      async register(api, config) {
        if (!config.slow) return;
        await new Promise<void>((ok) => {
          finish = ok;
        });
        api.observe({
          connection(_session, event) {
            events.push(`observed ${event}`);
          },
        });
        api.onClose(() => {
          events.push('close late');
        });
        registered();
      },
    });
    const t = await scope.start({
      config: { timeouts: { pluginStart: 100 } },
      plugins: [
        [late, { slow: false }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const next = current(t);
    entry(next, 'late').config = { slow: true };
    const refused = await t.server.reload({ config: next });
    expect(refused).toEqual({ ok: false, errors: ['Plugin "late" did not finish starting within 100 ms'] });
    // Its register goes on after the reload gave up on it.
    finish();
    await done;
    expect(events).toEqual(['close late']);
    await send(t);
    expect(events).toEqual(['close late']);
  });
});

describe('reload and shutdown: retiring instances', () => {
  it('close() resolves only after the instances of an earlier configuration closed, when its last session ends in the shutdown', async () => {
    const slowClose = definePlugin({
      name: 'slow-close',
      reloadable: true,
      schema: Type.Object({ tag: Type.String() }, { additionalProperties: false }),
      register(api, config) {
        api.onClose(async () => {
          // The old instance's close takes a while (a flush to disk).
          if (config.tag === 'old') await new Promise((ok) => setTimeout(ok, 100));
          events.push(`closed ${config.tag}`);
        });
      },
    });
    const t = await scope.start({
      plugins: [
        [slowClose, { tag: 'old' }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const open = await scope.connect(t);
    await open.expect('EHLO client.example', 250);
    const next = current(t);
    entry(next, 'slow-close').config = { tag: 'new' };
    expect((await t.server.reload({ config: next })).ok).toBe(true);
    // The idle session of generation 1 is sent away by the shutdown: its instance then retires.
    await t.server.close();
    expect(events.sort()).toEqual(['closed new', 'closed old']);
  });
});

describe('reload: an old instance slow to close', () => {
  it('applies the reload and the next one while a replaced instance is still closing', async () => {
    let release = () => {};
    const released = new Promise<void>((ok) => {
      release = ok;
    });
    const stuck = definePlugin({
      name: 'stuck-close',
      reloadable: true,
      schema: Type.Object({ tag: Type.String() }, { additionalProperties: false }),
      register(api, config) {
        api.onClose(async () => {
          events.push(`closing ${config.tag}`);
          if (config.tag === 'first') await released;
          events.push(`closed ${config.tag}`);
        });
      },
    });
    const t = await scope.start({
      plugins: [
        [stuck, { tag: 'first' }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    scope.defer(() => release());
    const second = current(t);
    entry(second, 'stuck-close').config = { tag: 'second' };
    expect((await t.server.reload({ config: second })).ok).toBe(true);
    expect(events).toEqual(['closing first']);
    const third = current(t);
    entry(third, 'stuck-close').config = { tag: 'third' };
    expect((await t.server.reload({ config: third })).ok).toBe(true);
    expect(t.server.generation).toBe(3);
    expect(events).toEqual(['closing first', 'closing second', 'closed second']);
    release();
    await t.close();
    expect(events).toEqual([
      'closing first',
      'closing second',
      'closed second',
      'closed first',
      'closing third',
      'closed third',
    ]);
  });
});
