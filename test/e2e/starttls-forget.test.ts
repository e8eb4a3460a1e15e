/**
 * RFC 3207 4.2: after the STARTTLS handshake the server discards everything
 * it learnt from the client that TLS itself did not give it: the EHLO, the
 * transaction, and every plugin's session state (`session.notes`, and state a
 * plugin keeps elsewhere, which the `secured` hook tells it to drop).
 */

import Type from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Session } from '../../core/types.ts';
import {
  CERT_SKIP_REASON,
  connectImplicitTls,
  makeCertDir,
  makeCertificate,
  removeCertDir,
  type TestCertificate,
  upgradeClient,
} from '../helpers/certs.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

let dir = '';
let cert: TestCertificate;

beforeAll(async () => {
  if (CERT_SKIP_REASON) return;
  dir = await makeCertDir();
  cert = await makeCertificate(dir, 'main', 'mx.test.example');
});
afterAll(async () => {
  if (dir) await removeCertDir(dir);
});

/**
 * A plugin with session state in both places: a note, and a map of its own.
 * `XNOTE SET v` records `v` in both; `XNOTE` answers what it still knows.
 */
function noteProbe() {
  const elsewhere = new WeakMap<Session, string>();
  const secured: Session[] = [];
  const plugin = definePlugin({
    name: 'note-probe',
    schema: Type.Object({}),
    register(api) {
      api.registerVerb({
        name: 'XNOTE',
        requiresHelo: false,
        handler({ session, argument }) {
          const notes = session.notes as { probe?: string };
          if (argument.startsWith('SET ')) {
            notes.probe = argument.slice(4);
            elsewhere.set(session, argument.slice(4));
          }
          return reply(
            250,
            undefined,
            `note=${notes.probe ?? 'none'} elsewhere=${elsewhere.get(session) ?? 'none'}`,
          );
        },
      });
      api.hooks.secured.tap((session) => {
        secured.push(session);
        elsewhere.delete(session);
      });
    },
  });
  return { plugin, secured };
}

function tlsPlugin() {
  return ['tls', { cert: cert.certPath, key: cert.keyPath, watch: false, reloadOnSighup: false }] as const;
}

describe.skipIf(CERT_SKIP_REASON !== undefined)('STARTTLS discards what was learnt before it', () => {
  it('gives the session fresh notes after the handshake and fires `secured` for state kept elsewhere', async () => {
    const probe = noteProbe();
    const t = await scope.start({
      plugins: [tlsPlugin(), probe.plugin],
    });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    expect((await c.expect('XNOTE SET before-tls', 250)).lines).toEqual([
      'note=before-tls elsewhere=before-tls',
    ]);
    await c.expect('STARTTLS', 220, '2.0.0');
    const s = await upgradeClient(c);
    scope.defer(() => s.socket.destroy());
    // Nothing survives: the plugin's note, its own state, the EHLO.
    expect((await s.client.expect('XNOTE', 250)).lines).toEqual(['note=none elsewhere=none']);
    expect((await s.client.command('MAIL FROM:<a@b.example>')).code).toBe(503);
    await s.client.expect('EHLO client.example', 250);
    expect(probe.secured).toHaveLength(1);
    expect(probe.secured[0]?.tls).toBeDefined();
    // What is learnt over TLS is kept as usual.
    await s.client.expect('XNOTE SET after-tls', 250);
    expect((await s.client.expect('XNOTE', 250)).lines).toEqual(['note=after-tls elsewhere=after-tls']);
  });

  it('does not fire `secured` for implicit TLS, where nothing was learnt before the handshake', async () => {
    const probe = noteProbe();
    const t = await scope.start({
      plugins: [tlsPlugin(), probe.plugin],
      config: {
        listeners: [
          { name: 'submissions', host: '127.0.0.1', port: 0, role: 'submission', implicitTls: true },
        ],
      },
    });
    const s = await connectImplicitTls(t.port);
    scope.defer(() => s.socket.destroy());
    expect(s.client.greeting?.code).toBe(220);
    await s.client.expect('EHLO client.example', 250);
    await s.client.expect('XNOTE SET kept', 250);
    expect((await s.client.expect('XNOTE', 250)).lines).toEqual(['note=kept elsewhere=kept']);
    expect(probe.secured).toHaveLength(0);
  });
});
