/**
 * REQUIRETLS (RFC 8689): offered only once TLS is up, refused on a clear-text
 * session (530 5.7.10), recorded as `attributes.requireTls`. TLS comes from a
 * minimal STARTTLS test plugin and a throwaway certificate made with openssl.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import Type from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import { SmtpClient, type TestServer, type TestServerOptions } from '../../core/testkit.ts';
import { sendOverStartTls } from '../helpers/mailer.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const OPENSSL = hasOpenssl();

let certDir: string | undefined;
let keyPath = '';
let certPath = '';
let keyPem = '';
let certPem = '';
beforeAll(() => {
  if (!OPENSSL) return;
  certDir = mkdtempSync(join(tmpdir(), 'mailframe-requiretls-'));
  keyPath = join(certDir, 'key.pem');
  certPath = join(certDir, 'cert.pem');
  const subject = ['-subj', '/CN=mx.test.example', '-days', '1'];
  const keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  execFileSync('openssl', ['req', '-x509', ...keyArgs, ...subject, '-keyout', keyPath, '-out', certPath], {
    stdio: 'ignore',
  });
  keyPem = readFileSync(keyPath, 'utf8');
  certPem = readFileSync(certPath, 'utf8');
});
afterAll(() => {
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});

/** Just enough STARTTLS (RFC 3207) to put a session under TLS. */
const startTlsForTests = definePlugin({
  name: 'test-starttls',
  schema: Type.Object({}),
  register(api) {
    api.hooks.capabilities.tap((keywords, session) => {
      if (!session.tls) keywords.push('STARTTLS');
      return keywords;
    });
    api.registerVerb({
      name: 'STARTTLS',
      outsideTransaction: true,
      async handler(ctx) {
        ctx.send(reply(220, '2.0.0', 'Ready to start TLS'));
        await ctx.upgradeToTls({ key: keyPem, cert: certPem });
        return undefined;
      },
    });
  },
});

async function plain(plugins: TestServerOptions): Promise<SmtpClient> {
  return scope.connect(await scope.start(plugins));
}

/** STARTTLS on a fresh connection; returns a client speaking over TLS (before its EHLO). */
async function overTls(server: TestServer): Promise<SmtpClient> {
  const c = await scope.connect(server);
  await c.expect('EHLO client.example', 250);
  await c.expect('STARTTLS', 220);
  const socket = tlsConnect({ socket: c.socket, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const secure = new SmtpClient(socket);
  scope.defer(() => secure.close());
  return secure;
}

/** EHLO under TLS (REQUIRETLS must be offered), then one message sent with REQUIRETLS. */
async function sendRequiringTls(c: SmtpClient): Promise<void> {
  const ehlo = await c.expect('EHLO client.example', 250);
  expect(ehlo.lines).toContain('REQUIRETLS');
  await c.expect('MAIL FROM:<a@b.example> REQUIRETLS', 250, '2.1.0');
  await c.expect('RCPT TO:<bob@example.com>', 250);
  await c.expect('DATA', 354);
  expect((await c.sendData('Subject: secret\r\n\r\nbody\r\n')).code).toBe(250);
}

describe('REQUIRETLS without TLS', () => {
  it('is not advertised and the parameter is refused with 530 5.7.10', async () => {
    const c = await plain({ plugins: ['requiretls', LOCAL] });
    const ehlo = await c.expect('EHLO client.example', 250);
    expect(ehlo.lines).not.toContain('REQUIRETLS');
    await c.expect('MAIL FROM:<a@b.example> REQUIRETLS', 530, '5.7.10');
    await c.expect('MAIL FROM:<a@b.example>', 250);
  });

  it('answers 501 5.5.4 to REQUIRETLS with a value', async () => {
    const c = await plain({ plugins: ['requiretls', LOCAL] });
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example> REQUIRETLS=YES', 501, '5.5.4');
  });

  it('without the plugin, REQUIRETLS is an unknown parameter (555 5.5.4)', async () => {
    const c = await plain({ plugins: [LOCAL] });
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example> REQUIRETLS', 555, '5.5.4');
  });
});

describe.skipIf(!OPENSSL)('REQUIRETLS under TLS', () => {
  it('is advertised after STARTTLS and recorded with the message', async () => {
    const t = await scope.start({ plugins: [startTlsForTests, 'requiretls', LOCAL] });
    const c = await overTls(t);
    await sendRequiringTls(c);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: plain\r\n\r\nbody\r\n')).code).toBe(250);
    const [first, second] = await t.waitForMessages(2);
    expect(first?.attributes.requireTls).toBe(true);
    expect(second?.attributes.requireTls).toBeUndefined();
  });

  it('works with the bundled tls plugin', async () => {
    const tls = ['tls', { cert: certPath, key: keyPath, watch: false, reloadOnSighup: false }] as const;
    const t = await scope.start({ plugins: [tls, 'requiretls', LOCAL] });
    const plainClient = await scope.connect(t);
    const before = await plainClient.expect('EHLO client.example', 250);
    expect(before.lines).toContain('STARTTLS');
    expect(before.lines).not.toContain('REQUIRETLS');
    const c = await overTls(t);
    await sendRequiringTls(c);
    const [m] = await t.waitForMessages(1);
    expect(m?.attributes.requireTls).toBe(true);
    expect(m?.text).toMatch(/with ESMTPS /);
  });

  it('nodemailer sends REQUIRETLS over STARTTLS when asked to', async () => {
    const t = await scope.start({ plugins: [startTlsForTests, 'requiretls', LOCAL] });
    const info = await sendOverStartTls(t.port, {
      from: 'a@b.example',
      to: 'bob@example.com',
      subject: 'must stay encrypted',
      text: 'hello',
      requireTLSExtensionEnabled: true,
    });
    expect(info.accepted).toEqual(['bob@example.com']);
    const [m] = await t.waitForMessages(1);
    expect(m?.attributes.requireTls).toBe(true);
  });
});
