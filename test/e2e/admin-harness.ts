/**
 * Helpers for the admin-http tests: a queue server (queue-fs or queue-pg, a scripted
 * delivery plugin, a fake clock) with admin-http on a free loopback port and
 * a tokens file holding one token, plus a small authorised `fetch`.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { newToken } from '../../plugins/admin-http/tokens.ts';
import {
  Deliverer,
  FakeClock,
  type QueueScope,
  type QueueServer,
  type QueueStoreKind,
  sendMail,
} from './queue-harness.ts';

export interface AdminSetup {
  readonly clock: FakeClock;
  readonly dir: string;
  readonly d: Deliverer;
  readonly s: QueueServer;
  /** `http://127.0.0.1:PORT` */
  readonly base: string;
  readonly token: string;
  readonly tokensFile: string;
  /** fetch `path` with the token. */
  api(path: string, init?: RequestInit): Promise<Response>;
}

export async function adminTokensFile(dir: string, name = 'ops'): Promise<{ token: string; path: string }> {
  const { token, line } = newToken(name);
  const path = join(dir, 'admin-tokens');
  await writeFile(path, `# admin API tokens\n${line}\n`, { mode: 0o600 });
  return { token, path };
}

/** A server whose deliveries are deferred (451) until the test says otherwise; its queue is `store` (default queue-fs). */
export async function startAdminServer(
  scope: QueueScope,
  opts: {
    admin?: Record<string, unknown>;
    plugins?: Parameters<QueueScope['start']>[0]['plugins'];
    store?: QueueStoreKind;
    /** Settings for the queue plugin over the store's own. */
    queue?: Record<string, unknown>;
  } = {},
): Promise<AdminSetup> {
  const clock = new FakeClock();
  const dir = await scope.tempDir();
  const { token, path } = await adminTokensFile(dir);
  const d = new Deliverer(clock);
  d.behaviour = () => ({ code: 451, enhanced: '4.3.0', text: 'not now' });
  const s = await scope.start({
    ...(opts.store === undefined ? {} : { store: opts.store }),
    ...(opts.queue === undefined ? {} : { queue: opts.queue }),
    clock,
    dataDir: join(dir, 'data'),
    plugins: [
      d.plugin,
      ...(opts.plugins ?? []),
      {
        plugin: 'admin-http',
        id: 'admin-http',
        config: { port: 0, tokensFile: path, watch: false, ...opts.admin },
      },
    ],
  });
  const address = s.server.registry.service('admin-http')?.address();
  if (!address) throw new Error('admin-http is not listening');
  const base = `http://127.0.0.1:${address.port}`;
  const api = (p: string, init: RequestInit = {}) =>
    fetch(base + p, {
      ...init,
      headers: {
        authorization: `Bearer ${token}`,
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(init.headers as Record<string, string> | undefined),
      },
    });
  return { clock, dir, d, s, base, token, tokensFile: path, api };
}

/** Three deferred messages: a (to example.com and example.org), b (example.com), c (example.net). */
export async function withDeferredMail(scope: QueueScope, opts: Parameters<typeof startAdminServer>[1] = {}) {
  const t = await startAdminServer(scope, opts);
  const a = await sendMail(t.s.port, {
    from: 'alice@example.net',
    to: ['bob@example.com', 'carol@example.org'],
  });
  const b = await sendMail(t.s.port, { from: 'dave@example.net', to: ['erin@example.com'] });
  const c = await sendMail(t.s.port, { from: 'frank@example.org', to: ['grace@example.net'] });
  await t.s.queue.runDue();
  return { ...t, a, b, c };
}
