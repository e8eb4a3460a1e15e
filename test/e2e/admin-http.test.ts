/**
 * The admin API over real HTTP (node's fetch) against a real server with
 * deferred mail: every route, the token checks, bulk actions by ids and by
 * filter, readiness, and redaction of secrets. The queue routes run on
 * queue-fs and on queue-pg.
 */
import { execFile } from 'node:child_process';
import { chmod, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import pino from 'pino';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { MailServer } from '../../core/server.ts';
import { connectClient } from '../../core/testkit.ts';
import { newToken, parseTokens, readTokens } from '../../plugins/admin-http/tokens.ts';
import { decide } from '../../plugins/policy/policy.ts';
import { queueDirOf } from '../../plugins/queue-fs/index.ts';
import { installCertificate, makeCertDir, makeCertificate, removeCertDir } from '../helpers/certs.ts';
import { Relay } from '../helpers/tcp-relay.ts';
import { adminTokensFile, startAdminServer, withDeferredMail } from './admin-harness.ts';
import { FakeClock, MINUTE, type QueueStoreKind, sendMail, useQueueScope } from './queue-harness.ts';

const scope = useQueueScope();

interface Summary {
  id: string;
  state: string;
  pending: number;
  attempts: number;
}
interface ListBody {
  messages: Summary[];
  offset: number;
  limit: number;
  nextOffset: number | null;
}

/** Says `quarantine` (through the policy model) for mail from spammer@example.net. */
const quarantineSpammer = definePlugin({
  name: 'test-quarantine',
  schema: Type.Object({}),
  register(api) {
    api.hooks.mail.tap((tx, from) =>
      from.address?.address === 'spammer@example.net'
        ? decide(tx, 'test-quarantine', 'fail', { fail: { action: 'quarantine' } })
        : undefined,
    );
  },
});

async function json<T>(r: Response | Promise<Response>, status = 200): Promise<T> {
  const res = await r;
  const text = await res.text();
  expect(res.status, text).toBe(status);
  return JSON.parse(text) as T;
}

describe('admin-http: auth', () => {
  it('refuses /api/ routes without a token (401, Bearer challenge) and with a wrong one (invalid_token)', async () => {
    const t = await startAdminServer(scope);
    for (const [method, path] of [
      ['GET', '/api/queue'],
      ['GET', '/api/queue/x'],
      ['GET', '/api/queue/x/message'],
      ['POST', '/api/queue/x/hold'],
      ['POST', '/api/queue/x/release'],
      ['POST', '/api/queue/x/retry'],
      ['DELETE', '/api/queue/x'],
      ['POST', '/api/queue/bulk'],
      ['GET', '/api/stats'],
      ['GET', '/api/config'],
      ['GET', '/api/plugins'],
    ] as const) {
      const none = await fetch(t.base + path, { method });
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(none.headers.get('www-authenticate')).toBe('Bearer realm="mailframe"');
      expect(await none.json()).toEqual({
        error: 'unauthorized',
        message: 'a valid bearer token is required',
      });
      const wrong = await fetch(t.base + path, {
        method,
        headers: { authorization: `Bearer ${t.token.slice(0, -2)}xx` },
      });
      expect(wrong.status, `${method} ${path}`).toBe(401);
      expect(wrong.headers.get('www-authenticate')).toBe('Bearer realm="mailframe", error="invalid_token"');
      const basic = await fetch(t.base + path, { method, headers: { authorization: `Basic ${t.token}` } });
      expect(basic.status).toBe(401);
    }
    // HEAD, which Fastify adds for every GET, is guarded the same way.
    expect((await fetch(`${t.base}/api/config`, { method: 'HEAD' })).status).toBe(401);
  });

  it('never logs a credential put in the query string (RFC 6750 2.3 access_token, which is not taken)', async () => {
    const dir = await scope.tempDir();
    const { token, path } = await adminTokensFile(dir);
    const logs: string[] = [];
    const server = await MailServer.create({
      config: {
        hostname: 'mx.test.example',
        dataDir: join(dir, 'data'),
        listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
        plugins: [{ plugin: 'admin-http', config: { port: 0, tokensFile: path, watch: false } }],
      },
      logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) }),
    });
    try {
      const port = server.registry.service('admin-http')?.address()?.port;
      const res = await fetch(`http://127.0.0.1:${port}/api/stats?access_token=${token}`);
      expect(res.status).toBe(401);
      const refused = logs.find((l) => l.includes('admin API: refused token'));
      expect(refused).toContain('"url":"/api/stats?..."');
      expect(logs.join('\n')).not.toContain(token);
    } finally {
      await server.close(0);
    }
  });

  it('serves health and readiness without a token, with security headers', async () => {
    const t = await startAdminServer(scope);
    const health = await fetch(`${t.base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    expect(health.headers.get('content-security-policy')).toMatch(/^default-src 'self'/);
    expect(health.headers.get('x-content-type-options')).toBe('nosniff');
    const ready = await fetch(`${t.base}/readyz`);
    expect(await ready.json()).toEqual({
      ready: true,
      checks: { started: { ok: true }, queue: { ok: true } },
    });
    expect(ready.status).toBe(200);
  });
});

describe.each(scope.stores)('admin-http: queue on $name', (store) => {
  it('lists with filters and pages', async () => {
    const t = await withDeferredMail(scope, { store });
    const all = await json<ListBody>(t.api('/api/queue'));
    expect(all.messages.map((m) => [m.id, m.state, m.pending, m.attempts])).toEqual([
      [t.a, 'deferred', 2, 1],
      [t.b, 'deferred', 1, 1],
      [t.c, 'deferred', 1, 1],
    ]);
    expect(all).toMatchObject({ offset: 0, limit: 50, nextOffset: null });

    const page1 = await json<ListBody>(t.api('/api/queue?limit=2'));
    expect(page1.messages.map((m) => m.id)).toEqual([t.a, t.b]);
    expect(page1.nextOffset).toBe(2);
    const page2 = await json<ListBody>(t.api('/api/queue?limit=2&offset=2'));
    expect(page2.messages.map((m) => m.id)).toEqual([t.c]);
    expect(page2.nextOffset).toBeNull();

    const ids = async (q: string) =>
      (await json<ListBody>(t.api(`/api/queue?${q}`))).messages.map((m) => m.id);
    expect(await ids('search=ERIN@')).toEqual([t.b]);
    expect(await ids('destination=example.com')).toEqual([t.a, t.b]);
    expect(await ids('destination=EXAMPLE.ORG')).toEqual([t.a]);
    expect(await ids('state=held')).toEqual([]);
    expect(await ids('state=deferred&search=frank')).toEqual([t.c]);

    for (const bad of ['state=lost', 'limit=0', 'limit=501', 'offset=-1', 'colour=red']) {
      const body = await json<{ error: string }>(t.api(`/api/queue?${bad}`), 400);
      expect(body.error, bad).toBe('bad-request');
    }
  });

  it('shows a message with per-recipient history, streams it on request, 404 for an unknown id', async () => {
    const t = await withDeferredMail(scope, { store });
    t.clock.advance(10 * MINUTE);
    await t.s.queue.runDue();
    const shown = await json<{
      id: string;
      from: string;
      headers: string;
      source: { kind: string; client: string };
      recipientStates: Array<{
        address: string;
        status: string;
        attempts: number;
        reply: { code: number; text: string };
      }>;
    }>(t.api(`/api/queue/${t.a}`));
    expect(shown.id).toBe(t.a);
    expect(shown.from).toBe('alice@example.net');
    expect(shown.headers).toContain('Subject: test');
    expect(shown.source).toMatchObject({ kind: 'smtp', client: '127.0.0.1' });
    expect(
      shown.recipientStates.map((r) => [r.address, r.status, r.attempts, r.reply.code, r.reply.text]),
    ).toEqual([
      ['bob@example.com', 'pending', 2, 451, 'not now'],
      ['carol@example.org', 'pending', 2, 451, 'not now'],
    ]);

    const raw = await t.api(`/api/queue/${t.a}/message`);
    expect(raw.status).toBe(200);
    expect(raw.headers.get('content-type')).toBe('message/rfc822');
    const text = await raw.text();
    expect(text).toMatch(/^Received: /);
    expect(text).toContain('\r\n\r\nHello.\r\n');
    expect(Number(raw.headers.get('content-length'))).toBe(Buffer.byteLength(text));

    for (const path of ['/api/queue/nope', '/api/queue/nope/message']) {
      expect(await json(t.api(path), 404)).toEqual({
        error: 'not-found',
        message: 'no message nope in the queue',
      });
    }
  });

  it('holds, releases, retries and deletes one message; 404 for an unknown id', async () => {
    const t = await withDeferredMail(scope, { store });
    const state = async (id: string) =>
      await json<{ state: string; nextAttemptAt: number; attempts: number }>(t.api(`/api/queue/${id}`));

    expect(await json(t.api(`/api/queue/${t.a}/hold`, { method: 'POST' }))).toEqual({
      id: t.a,
      action: 'hold',
      done: true,
    });
    expect((await state(t.a)).state).toBe('held');
    await json(t.api(`/api/queue/${t.a}/release`, { method: 'POST' }));
    expect((await state(t.a)).state).toBe('deferred');

    // Retry makes b due now: it is tried again at once, without the clock moving.
    expect((await state(t.b)).nextAttemptAt).toBeGreaterThan(t.clock.now());
    await json(t.api(`/api/queue/${t.b}/retry`, { method: 'POST' }));
    await t.s.queue.runDue();
    expect(t.d.from('dave@example.net')).toHaveLength(2);
    expect((await state(t.b)).attempts).toBe(2);

    expect(await json(t.api(`/api/queue/${t.c}`, { method: 'DELETE' }))).toEqual({
      id: t.c,
      action: 'delete',
      done: true,
    });
    await json(t.api(`/api/queue/${t.c}`), 404);
    expect((await t.s.queue.list()).map((m) => m.id)).toEqual([t.a, t.b]);

    for (const action of ['hold', 'release', 'retry']) {
      await json(t.api(`/api/queue/nope/${action}`, { method: 'POST' }), 404);
    }
    await json(t.api('/api/queue/nope', { method: 'DELETE' }), 404);
    // An id that cannot be a queue id is a bad request, not a lookup.
    expect((await json<{ error: string }>(t.api('/api/queue/a%22b'), 400)).error).toBe('bad-request');
  });

  it('applies bulk actions by filter and by ids', async () => {
    const t = await withDeferredMail(scope, { store });
    const bulk = (body: unknown, status = 200) =>
      json<{ action: string; matched: number; done: string[]; notFound: string[] }>(
        t.api('/api/queue/bulk', { method: 'POST', body: JSON.stringify(body) }),
        status,
      );

    expect(await bulk({ action: 'hold', filter: { destination: 'example.com' } })).toEqual({
      action: 'hold',
      matched: 2,
      done: [t.a, t.b],
      notFound: [],
    });
    expect((await t.s.queue.list({ state: 'held' })).map((m) => m.id)).toEqual([t.a, t.b]);

    expect(await bulk({ action: 'release', filter: { state: 'held', search: 'dave' } })).toMatchObject({
      matched: 1,
      done: [t.b],
    });
    expect((await t.s.queue.list({ state: 'held' })).map((m) => m.id)).toEqual([t.a]);

    expect(await bulk({ action: 'delete', ids: [t.c, 'nope', t.c] })).toEqual({
      action: 'delete',
      matched: 2,
      done: [t.c],
      notFound: ['nope'],
    });
    expect((await t.s.queue.list()).map((m) => m.id)).toEqual([t.a, t.b]);

    // Nothing is touched by a request that names no messages or is malformed.
    for (const body of [
      { action: 'delete', filter: {} },
      { action: 'delete' },
      { action: 'delete', ids: [t.a], filter: { state: 'held' } },
      { action: 'explode', ids: [t.a] },
      { action: 'delete', ids: [] },
      { action: 'delete', filter: { state: 'held', colour: 'red' } },
    ]) {
      expect((await bulk(body, 400)).action, JSON.stringify(body)).toBeUndefined();
    }
    expect((await t.s.queue.list()).map((m) => m.id)).toEqual([t.a, t.b]);
  });

  it('lists quarantined messages with the reason, counts them, and releases one to delivery', async () => {
    const t = await withDeferredMail(scope, { store, plugins: [quarantineSpammer] });
    const q = await sendMail(t.s.port, { from: 'spammer@example.net', to: ['bob@example.com'] });
    await t.s.queue.runDue();
    expect(t.d.from('spammer@example.net')).toEqual([]);

    const listed = await json<{ messages: Array<Summary & { quarantine?: unknown }> }>(
      t.api('/api/queue?state=quarantined'),
    );
    expect(listed.messages.map((m) => [m.id, m.state, m.quarantine])).toEqual([
      [q, 'quarantined', { check: 'test-quarantine', result: 'fail' }],
    ]);
    // Paged and filtered by destination like the rest of the queue.
    expect(
      (await json<ListBody>(t.api('/api/queue?destination=example.com&offset=1&limit=2'))).messages.map(
        (m) => m.id,
      ),
    ).toEqual([t.b, q]);
    const stats = await json<{ queue: { messages: number; quarantined: number; deferred: number } }>(
      t.api('/api/stats'),
    );
    expect(stats.queue).toMatchObject({ messages: 4, quarantined: 1, deferred: 3 });

    await json(t.api(`/api/queue/${q}/release`, { method: 'POST' }));
    await t.s.queue.runDue();
    expect(t.d.from('spammer@example.net')).toHaveLength(1);
    const shown = await json<Summary & { quarantine?: unknown }>(t.api(`/api/queue/${q}`));
    expect([shown.state, shown.quarantine]).toEqual(['deferred', undefined]);
  });
});

describe('admin-http: server state', () => {
  it('reports live counters, hook metrics and queue statistics', async () => {
    const t = await withDeferredMail(scope);
    // A fourth connection whose message is refused at its end: a mail loop (RFC 5321 6.3).
    const c = await connectClient(t.s.port);
    try {
      await c.expect('EHLO client.test', 250);
      await c.expect('MAIL FROM:<loop@example.net>', 250);
      await c.expect('RCPT TO:<bob@example.com>', 250);
      await c.expect('DATA', 354);
      const looped = `${'Received: from a by b; Mon, 2 Mar 2026 10:00:00 +0000\r\n'.repeat(101)}Subject: x\r\n\r\nx\r\n`;
      expect((await c.sendData(looped)).code).toBe(554);
      await c.expect('QUIT', 221);
    } finally {
      await c.close();
    }
    const stats = await json<{
      at: number;
      ready: boolean;
      connections: { open: number; total: number };
      messages: { accepted: number; refused: number; bytes: number };
      hooks: Array<{ plugin: string; hook: string; calls: number }>;
      queue: { messages: number; deferred: number; recipients: { pending: number } };
    }>(t.api('/api/stats'));
    expect(stats.at).toBe(t.clock.now());
    expect(stats.ready).toBe(true);
    expect(stats.connections.total).toBe(4);
    expect(stats.messages.accepted).toBe(3);
    expect(stats.messages.refused).toBe(1);
    expect(stats.messages.bytes).toBeGreaterThan(3 * 80);
    expect(stats.hooks).toContainEqual(
      expect.objectContaining({ plugin: 'rcpt-local', hook: 'rcpt', calls: 5 }),
    );
    expect(stats.hooks).toContainEqual(
      // a has two destinations: four jobs.
      expect.objectContaining({ plugin: 'test-deliver', hook: 'deliver', calls: 4 }),
    );
    expect(stats.queue).toMatchObject({ messages: 3, deferred: 3, recipients: { pending: 4 } });
  });

  it('lists plugins in load order with the health of their hooks', async () => {
    const t = await withDeferredMail(scope);
    const body = await json<{
      ready: boolean;
      plugins: Array<{
        id: string;
        plugin: string;
        healthy: boolean;
        calls: number;
        hooks: Array<{ hook: string }>;
      }>;
    }>(t.api('/api/plugins'));
    expect(body.ready).toBe(true);
    expect(body.plugins.map((p) => p.id)).toEqual([
      'enhanced-status-codes',
      'pipelining',
      'rcpt-local',
      'test-deliver',
      'admin-http',
      'queue-fs',
    ]);
    expect(body.plugins.every((p) => p.healthy)).toBe(true);
    expect(body.plugins.find((p) => p.id === 'queue-fs')?.hooks.map((h) => h.hook)).toContain('queue');
  });

  it('shows the effective configuration with secrets redacted (writeOnly in the schema, or a secret key name)', async () => {
    const t = await withDeferredMail(scope, {
      plugins: [
        {
          plugin: 'relay-smarthost',
          id: 'smarthost',
          config: { host: 'smtp.example.net', auth: { user: 'relay', pass: 'hunter2' } },
        },
        {
          // A key name that says nothing: only the schema's writeOnly marks it secret.
          plugin: definePlugin({
            name: 'webhook',
            schema: Type.Object({
              url: Type.String(),
              signing: Type.Object({ value: Type.String({ writeOnly: true }), alg: Type.String() }),
            }),
            register() {},
          }),
          id: 'webhook',
          config: { url: 'https://hooks.example.net/x', signing: { value: 'correct-horse', alg: 'hs256' } },
        },
      ],
    });
    const res = await t.api('/api/config');
    const text = await res.text();
    expect(res.status).toBe(200);
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('correct-horse');
    expect(text).not.toContain(t.token);
    const body = JSON.parse(text) as {
      core: Record<string, unknown>;
      plugins: Array<{ id: string; plugin: string; config: Record<string, unknown> }>;
    };
    expect(body.core).toMatchObject({ hostname: 'mx.test.example', limits: { maxRecipients: 100 } });
    expect(body.core['plugins']).toBeUndefined();
    const smarthost = body.plugins.find((p) => p.id === 'smarthost');
    expect(smarthost).toMatchObject({
      plugin: 'relay-smarthost',
      config: { host: 'smtp.example.net', port: 25, auth: { user: 'relay', pass: '[redacted]' } },
    });
    expect(body.plugins.find((p) => p.id === 'webhook')?.config).toEqual({
      url: 'https://hooks.example.net/x',
      signing: { value: '[redacted]', alg: 'hs256' },
    });
    expect(body.plugins.find((p) => p.id === 'queue-fs')?.config).toMatchObject({
      fsync: false,
      journal: true,
    });
  });

  it('is not ready before start completes, and not when the queue store is unreachable', async () => {
    const clock = new FakeClock();
    const dir = await scope.tempDir();
    const { path } = await adminTokensFile(dir);
    const dataDir = join(dir, 'data');
    const server = await MailServer.create({
      config: {
        hostname: 'mx.test.example',
        dataDir,
        listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
        plugins: [
          { plugin: 'rcpt-local', config: { domains: ['example.com'] } },
          { plugin: 'admin-http', config: { port: 0, tokensFile: path, watch: false } },
          { plugin: 'queue-fs', config: { fsync: false } },
        ],
      },
      clock,
    });
    try {
      const port = server.registry.service('admin-http')?.address()?.port;
      const readyz = async () => {
        const r = await fetch(`http://127.0.0.1:${port}/readyz`);
        return {
          status: r.status,
          body: (await r.json()) as { ready: boolean; checks: Record<string, unknown> },
        };
      };
      // Plugins started, SMTP listeners not open yet.
      expect(await readyz()).toEqual({
        status: 503,
        body: {
          ready: false,
          checks: {
            started: { ok: false, detail: 'starting: plugins or listeners not up yet' },
            queue: { ok: true },
          },
        },
      });
      await server.listen();
      expect((await readyz()).status).toBe(200);

      // The queue directory goes away (an unmounted volume): not ready, saying why.
      const queueDir = queueDirOf(dataDir, undefined);
      await rename(join(queueDir, 'messages'), join(queueDir, 'messages.gone'));
      const down = await readyz();
      expect(down.status).toBe(503);
      expect(down.body.checks['started']).toEqual({ ok: true });
      expect(down.body.checks['queue']).toMatchObject({ ok: false, detail: expect.stringMatching(/ENOENT/) });
      await rename(join(queueDir, 'messages.gone'), join(queueDir, 'messages'));
      expect((await readyz()).status).toBe(200);
    } finally {
      await server.close(0);
    }
  });

  it('is not ready while the queue database is unreachable (queue-pg), and ready again once it is back', async () => {
    const store = scope.stores.find((k) => k.name === 'queue-pg') as QueueStoreKind;
    const url = new URL((await store.config(await scope.tempDir()))['connectionString'] as string);
    const relay = new Relay({ host: url.hostname, port: Number(url.port) });
    await relay.open();
    scope.defer(() => relay.cut());
    url.port = String(relay.port);
    const t = await startAdminServer(scope, {
      store,
      queue: { connectionString: url.toString(), connectTimeout: '2s' },
    });
    const readyz = async () => {
      const r = await fetch(`${t.base}/readyz`);
      return { status: r.status, body: (await r.json()) as { checks: Record<string, unknown> } };
    };
    expect(await readyz()).toEqual({
      status: 200,
      body: { ready: true, checks: { started: { ok: true }, queue: { ok: true } } },
    });

    await relay.cut();
    const down = await readyz();
    expect(down.status).toBe(503);
    expect(down.body.checks['started']).toEqual({ ok: true });
    expect(down.body.checks['queue']).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/ECONNREFUSED/),
    });

    await relay.open(); // the same port: the pool reconnects on its own
    expect((await readyz()).status).toBe(200);
  });

  it('answers unknown routes with 404 and a JSON body', async () => {
    const t = await startAdminServer(scope);
    expect(await json(t.api('/api/nothing'), 404)).toEqual({
      error: 'not-found',
      message: 'no route GET /api/nothing',
    });
  });
});

describe('admin tokens', () => {
  it('`mailframe admin-token NAME` prints a token and the line that admits it', async () => {
    const bin = join(import.meta.dirname, '../../bin/mailframe.js');
    const run = (...args: string[]) =>
      new Promise<{ code: number; out: string; err: string }>((resolve) => {
        execFile(process.execPath, [bin, 'admin-token', ...args], (err, out, errOut) =>
          resolve({ code: err ? Number(err.code) : 0, out, err: errOut }),
        );
      });
    const made = await run('ci-bot');
    expect(made.code, made.err).toBe(0);
    const token = /^token: (mft_[A-Za-z0-9_-]{43})$/m.exec(made.out)?.[1];
    const line = /^line: +(ci-bot sha256:[0-9a-f]{64})$/m.exec(made.out)?.[1];
    expect(token && line, made.out).toBeTruthy();
    expect(made.err).toMatch(/tokens file/);
    expect((await run('bad name!')).code).toBe(2);

    // The printed line admits the printed token, and only it.
    const file = join(await scope.tempDir(), 'tokens');
    await writeFile(file, `${line}\n`);
    const t = await startAdminServer(scope, { admin: { tokensFile: file } });
    const as = (tok: string) => fetch(`${t.base}/api/stats`, { headers: { authorization: `Bearer ${tok}` } });
    expect((await as(token ?? '')).status).toBe(200);
    expect((await as(t.token)).status).toBe(401);
  });

  it('a tokens file every user may write is refused (anyone could add a token)', async () => {
    const dir = await scope.tempDir();
    const { path } = await adminTokensFile(dir);
    await chmod(path, 0o666);
    const create = MailServer.create({
      config: {
        hostname: 'mx.test.example',
        dataDir: join(dir, 'data'),
        listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
        plugins: [{ plugin: 'admin-http', config: { port: 0, tokensFile: path, watch: false } }],
      },
    });
    await expect(create).rejects.toThrow(/admin-tokens is writable by every user/);

    // The reload reads it the same way (a failed reload keeps the previous tokens).
    await expect(readTokens(path)).rejects.toThrow(/writable by every user/);
    await chmod(path, 0o644);
    expect(await readTokens(path)).toHaveLength(1);
  });

  it('a tokens file with a bad line is refused naming the line, never its content', () => {
    expect(() => parseTokens('# c\n\nok sha256:' + 'a'.repeat(64) + '\n', 'f')).not.toThrow();
    expect(() => parseTokens('ok mft_plaintext-token\n', 'f')).toThrow(/^f:1: expected "NAME sha256:HEX"/);
    expect(() => parseTokens('ok mft_plaintext-token\n', 'f')).not.toThrow(/plaintext/);
    const dup = `a sha256:${'a'.repeat(64)}\na sha256:${'b'.repeat(64)}\n`;
    expect(() => parseTokens(dup, 'f')).toThrow(/f:2: token name "a" appears twice/);
  });
});

describe('admin-http: transport and lifecycle', () => {
  it('serves HTTPS with the configured certificate', async () => {
    const certs = await makeCertDir();
    try {
      const cert = await makeCertificate(certs, 'admin', 'admin.test.example');
      const t = await startAdminServer(scope, { admin: { tls: { cert: cert.certPath, key: cert.keyPath } } });
      expect(t.s.server.registry.service('admin-http')?.address()?.tls).toBe(true);
      const port = new URL(t.base).port;
      const get = (path: string, token?: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = httpsRequest(
            {
              host: '127.0.0.1',
              port,
              path,
              servername: 'admin.test.example',
              ca: cert.cert,
              headers: token ? { authorization: `Bearer ${token}` } : {},
            },
            (res) => {
              let body = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => (body += c));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
            },
          );
          req.on('error', reject);
          req.end();
        });
      expect(await get('/healthz')).toEqual({ status: 200, body: '{"status":"ok"}' });
      expect((await get('/api/stats')).status).toBe(401);
      expect((await get('/api/stats', t.token)).status).toBe(200);
      // Plain HTTP is not served on the TLS port.
      await expect(fetch(`${t.base}/healthz`)).rejects.toThrow();
    } finally {
      await removeCertDir(certs);
    }
  });

  it('serves a renewed certificate without a restart (watch)', async () => {
    const certs = await makeCertDir();
    try {
      const live = await makeCertificate(certs, 'admin', 'admin.test.example');
      const fresh = await makeCertificate(certs, 'fresh', 'admin.test.example');
      const t = await startAdminServer(scope, {
        admin: { watch: true, tls: { cert: live.certPath, key: live.keyPath } },
      });
      const port = Number(new URL(t.base).port);
      const served = () =>
        new Promise<string>((resolve, reject) => {
          const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
            resolve(socket.getPeerCertificate().fingerprint256);
            socket.destroy();
          });
          socket.on('error', reject);
        });
      expect(await served()).toBe(live.fingerprint256);
      await installCertificate(fresh, live);
      await expect.poll(served, { timeout: 5000 }).toBe(fresh.fingerprint256);
    } finally {
      await removeCertDir(certs);
    }
  });

  it('reloads the tokens file when it changes: a new token works, a removed one stops working', async () => {
    const t = await startAdminServer(scope, { admin: { watch: true } });
    const as = async (tok: string) =>
      (await fetch(`${t.base}/api/stats`, { headers: { authorization: `Bearer ${tok}` } })).status;
    expect(await as(t.token)).toBe(200);
    const next = newToken('rotated');
    await writeFile(`${t.tokensFile}.new`, `${next.line}\n`);
    await rename(`${t.tokensFile}.new`, t.tokensFile);
    await expect.poll(() => as(next.token), { timeout: 5000 }).toBe(200);
    expect(await as(t.token)).toBe(401);
  });

  it('refuses every token once the tokens file is removed (watch), and admits them again when it is back', async () => {
    const t = await startAdminServer(scope, { admin: { watch: true } });
    const as = async (tok: string) =>
      (await fetch(`${t.base}/api/stats`, { headers: { authorization: `Bearer ${tok}` } })).status;
    expect(await as(t.token)).toBe(200);
    const saved = await readFile(t.tokensFile);
    await unlink(t.tokensFile);
    await expect.poll(() => as(t.token), { timeout: 5000 }).toBe(401);
    await writeFile(`${t.tokensFile}.new`, saved, { mode: 0o600 });
    await rename(`${t.tokensFile}.new`, t.tokensFile);
    await expect.poll(() => as(t.token), { timeout: 5000 }).toBe(200);
  });

  it('is not ready once shutdown begins, while open transactions finish', async () => {
    const t = await startAdminServer(scope);
    const c = await connectClient(t.s.port);
    try {
      await c.expect('EHLO client.test', 250);
      await c.expect('MAIL FROM:<a@example.net>', 250);
      const closing = t.s.server.close(10_000);
      await expect
        .poll(async () => {
          const r = await fetch(`${t.base}/readyz`);
          return [r.status, ((await r.json()) as { checks: { started: unknown } }).checks.started];
        })
        .toEqual([503, { ok: false, detail: 'shutting down' }]);
      await c.expect('QUIT', 221);
      await closing;
    } finally {
      await c.close();
    }
  });
});
