/**
 * STARTTLS (RFC 3207) and implicit TLS (RFC 8314) through the `tls` plugin,
 * over real loopback sockets with certificates generated for each run.
 */
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer, type TestServerOptions } from '../../core/testkit.ts';
import { certificateStoreOf } from '../../plugins/tls/index.ts';
import {
  CERT_SKIP_REASON,
  connectImplicitTls,
  installCertificate,
  makeCertDir,
  makeCertificate,
  removeCertDir,
  startTls,
  type TestCertificate,
  upgradeClient,
} from '../helpers/certs.ts';
import { sendOverStartTls } from '../helpers/mailer.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

let dir = '';
let main: TestCertificate;
let other: TestCertificate;

beforeAll(async () => {
  if (CERT_SKIP_REASON) return;
  dir = await makeCertDir();
  [main, other] = await Promise.all([
    makeCertificate(dir, 'main', 'mx.test.example'),
    makeCertificate(dir, 'other', 'other.test.example'),
  ]);
});
afterAll(async () => {
  if (dir) await removeCertDir(dir);
});

function tlsConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { cert: main.certPath, key: main.keyPath, watch: false, reloadOnSighup: false, ...extra };
}

async function start(opts: { tls?: Record<string, unknown> } & TestServerOptions = {}): Promise<TestServer> {
  return scope.start({
    ...opts,
    plugins: [
      ['tls', tlsConfig(opts.tls)],
      ['rcpt-local', { domains: ['example.com'] }],
      ...(opts.plugins ?? []),
    ],
  });
}

function portOf(server: TestServer, name: string): number {
  const a = server.server.addresses().find((x) => x.name === name);
  if (!a) throw new Error(`no listener ${name}`);
  return a.port;
}

describe.skipIf(CERT_SKIP_REASON !== undefined)('tls plugin: STARTTLS', () => {
  it('advertises STARTTLS before TLS, upgrades, and stops advertising it after', async () => {
    const server = await start();
    const c = await server.connect();
    const before = await c.expect('EHLO client.example', 250);
    expect(before.lines).toContain('STARTTLS');
    await c.expect('STARTTLS', 220, '2.0.0');
    const s = await upgradeClient(c);
    expect(s.fingerprint256).toBe(main.fingerprint256);
    expect(s.socket.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    const after = await s.client.expect('EHLO client.example', 250);
    expect(after.lines).not.toContain('STARTTLS');
    expect(after.lines).toContain('ENHANCEDSTATUSCODES');
    await s.client.expect('STARTTLS', 503, '5.5.1');
    await s.client.expect('QUIT', 221);
  });

  it('refuses STARTTLS with an argument (501 5.5.4), in a transaction (503 5.5.1) and before EHLO (503)', async () => {
    const server = await start();
    const c = await server.connect();
    await c.expect('STARTTLS', 503);
    await c.expect('EHLO client.example', 250);
    await c.expect('STARTTLS now', 501, '5.5.4');
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('STARTTLS', 503, '5.5.1');
    await c.expect('RSET', 250);
    await c.expect('STARTTLS', 220, '2.0.0');
    const s = await upgradeClient(c);
    await s.client.expect('EHLO client.example', 250);
  });

  it('discards commands pipelined after STARTTLS (RSET): the first TLS reply answers the next command', async () => {
    const server = await start();
    const c = await server.connect();
    await c.expect('EHLO client.example', 250);
    c.send('STARTTLS\r\nRSET\r\n');
    const ready = await c.read();
    expect(ready.code).toBe(220);
    const s = await upgradeClient(c);
    // An answer to the injected RSET would be `250 2.0.0 Reset OK`; the first reply must be to NOOP.
    const first = await s.client.command('NOOP');
    expect(first.code).toBe(250);
    expect(first.lines[0]).toBe('OK');
    expect(s.client.pending).toBe('');
    expect(c.pending).toBe('');
  });

  it('discards an injected MAIL: after TLS, MAIL needs EHLO again (503)', async () => {
    const server = await start();
    const c = await server.connect();
    await c.expect('EHLO client.example', 250);
    c.send('STARTTLS\r\nMAIL FROM:<x@y.example>\r\n');
    expect((await c.read()).code).toBe(220);
    const s = await upgradeClient(c);
    // An answer to the injected MAIL would come first and shift every reply below by one.
    await s.client.expect('MAIL FROM:<x@y.example>', 503);
    await s.client.expect('EHLO client.example', 250);
    await s.client.expect('MAIL FROM:<x@y.example>', 250, '2.1.0');
    await s.client.expect('NOOP', 250);
    expect(s.client.pending).toBe('');
  });

  it('closes the connection when the handshake fails', async () => {
    const server = await start();
    const c = await server.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('STARTTLS', 220);
    c.send('this is not a TLS ClientHello\r\n\r\n');
    await c.waitClosed();
    expect(c.ended).toBe(true);
  });

  it('closes a connection that goes silent in the middle of the handshake (timeouts.command)', async () => {
    const logs: Array<{ msg?: string; err?: unknown; cid?: unknown }> = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
        done();
      },
    });
    const server = await start({
      config: { timeouts: { command: 300 } },
      logger: pino({ level: 'info' }, sink),
    });
    const c = await server.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('STARTTLS', 220);
    c.send(Buffer.from([0x16, 0x03, 0x01])); // the start of a TLS record, then nothing
    await c.waitClosed(5000);
    // The command timeout ended the handshake: no error in what was sent, no close by the client.
    const failed = logs.filter((l) => l.msg === 'TLS handshake failed');
    expect(failed.map((l) => l.err)).toEqual(['TLS handshake timed out']);
  });

  it('marks the Received header ESMTPS with the cipher', async () => {
    const server = await start();
    const s = await startTls(await server.connect());
    await s.client.expect('EHLO client.example', 250);
    await s.client.expect('MAIL FROM:<a@b.example>', 250);
    await s.client.expect('RCPT TO:<bob@example.com>', 250);
    await s.client.expect('DATA', 354);
    expect((await s.client.sendData('Subject: tls\r\n\r\nhi\r\n')).code).toBe(250);
    const [m] = await server.waitForMessages(1);
    const cipher = s.socket.getCipher();
    expect(m?.text).toMatch(/with ESMTPS id/);
    expect(m?.text).toContain(`cipher=${cipher.standardName}`);
  });

  it('sends with nodemailer over STARTTLS (requireTLS)', async () => {
    const server = await start();
    const info = await sendOverStartTls(server.port, {
      from: 'a@b.example',
      to: 'bob@example.com',
      subject: 'over TLS',
      text: 'hello',
    });
    expect(info.accepted).toEqual(['bob@example.com']);
    const [m] = await server.waitForMessages(1);
    expect(m?.text).toMatch(/with ESMTPS id/);
  });

  it('with advertise: false, neither advertises nor accepts STARTTLS', async () => {
    const server = await start({ tls: { advertise: false } });
    const c = await server.connect();
    const ehlo = await c.expect('EHLO client.example', 250);
    expect(ehlo.lines).not.toContain('STARTTLS');
    await c.expect('STARTTLS', 500, '5.5.2');
  });

  it('honours the plugin entry listeners scope', async () => {
    const t = await scope.start({
      config: {
        listeners: [
          { name: 'smtp', host: '127.0.0.1', port: 0 },
          { name: 'inside', host: '127.0.0.1', port: 0 },
        ],
      },
      plugins: [{ plugin: 'tls', config: tlsConfig(), listeners: ['inside'] }],
    });
    const outside = await t.connect({ listener: 'smtp' });
    expect((await outside.expect('EHLO client.example', 250)).lines).not.toContain('STARTTLS');
    await outside.expect('STARTTLS', 500, '5.5.2');
    const inside = await t.connect({ listener: 'inside' });
    expect((await inside.expect('EHLO client.example', 250)).lines).toContain('STARTTLS');
    await inside.expect('STARTTLS', 220);
    const s = await upgradeClient(inside);
    await s.client.expect('EHLO client.example', 250);
  });

  it('picks the certificate by SNI name', async () => {
    const server = await start({
      tls: { sni: { 'other.test.example': { cert: other.certPath, key: other.keyPath } } },
    });
    const a = await startTls(await server.connect(), 'other.test.example');
    expect(a.fingerprint256).toBe(other.fingerprint256);
    const b = await startTls(await server.connect(), 'unknown.test.example');
    expect(b.fingerprint256).toBe(main.fingerprint256);
  });
});

describe.skipIf(CERT_SKIP_REASON !== undefined)('tls plugin: implicit TLS', () => {
  it('greets over TLS on an implicitTls listener and does not offer STARTTLS there', async () => {
    const server = await start({
      config: {
        listeners: [
          { name: 'smtp', host: '127.0.0.1', port: 0 },
          { name: 'submissions', host: '127.0.0.1', port: 0, implicitTls: true, role: 'submission' },
        ],
      },
    });
    const s = await connectImplicitTls(portOf(server, 'submissions'));
    expect(s.client.greeting?.code).toBe(220);
    expect(s.fingerprint256).toBe(main.fingerprint256);
    const ehlo = await s.client.expect('EHLO client.example', 250);
    expect(ehlo.lines).not.toContain('STARTTLS');
    await s.client.expect('STARTTLS', 503, '5.5.1');
    await s.client.expect('QUIT', 221);
  });

  it('refuses to start without a usable certificate', async () => {
    await expect(
      startTestServer({ plugins: [['tls', tlsConfig({ cert: `${dir}/missing.crt` })]] }),
    ).rejects.toThrow(/missing\.crt/);
    await expect(startTestServer({ plugins: [['tls', tlsConfig({ key: other.keyPath })]] })).rejects.toThrow(
      /key values mismatch/,
    );
    await expect(
      startTestServer({ plugins: [['tls', { cert: main.certPath, watch: false, reloadOnSighup: false }]] }),
    ).rejects.toThrow(/set both "cert" and "key"/);
    await expect(startTestServer({ plugins: [['tls', { watch: false }]] })).rejects.toThrow(/selfSigned/);
  });
});

/**
 * Ask for a renegotiation from the client side (TLS 1.2: TLS 1.3 has none):
 * undefined when the server went along with it, else the error it ended in.
 * A refusing server ignores the new ClientHello (no handshake, no CPU spent);
 * the stalled connection then ends at the server's command timeout.
 */
function renegotiate(socket: TLSSocket): Promise<Error | undefined> {
  expect(socket.getProtocol()).toBe('TLSv1.2');
  return new Promise((resolve) => {
    socket.once('close', () => resolve(new Error('closed during renegotiation')));
    const started = socket.renegotiate({ rejectUnauthorized: false }, (err) => resolve(err ?? undefined));
    expect(started).toBe(true);
  });
}

const TLS12 = { maxVersion: 'TLSv1.2' } as const;

describe.skipIf(CERT_SKIP_REASON !== undefined)('tls plugin: renegotiation', () => {
  const config: TestServerOptions['config'] = {
    listeners: [
      { name: 'smtp', host: '127.0.0.1', port: 0 },
      { name: 'submissions', host: '127.0.0.1', port: 0, implicitTls: true, role: 'submission' },
    ],
    // A refused renegotiation leaves the client waiting: end it soon.
    timeouts: { command: 1500 },
  };

  it('refuses a client-initiated renegotiation after STARTTLS and keeps serving other clients', async () => {
    const server = await start({ config });
    const c = await server.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('STARTTLS', 220);
    const s = await upgradeClient(c, undefined, TLS12);
    await s.client.expect('EHLO client.example', 250);
    expect(await renegotiate(s.socket)).toBeInstanceOf(Error);
    const other = await startTls(await server.connect());
    await other.client.expect('EHLO client.example', 250);
    await other.client.expect('QUIT', 221);
  });

  it('refuses a client-initiated renegotiation on an implicit-TLS listener', async () => {
    const server = await start({ config });
    const s = await connectImplicitTls(portOf(server, 'submissions'), undefined, TLS12);
    await s.client.expect('EHLO client.example', 250);
    expect(await renegotiate(s.socket)).toBeInstanceOf(Error);
    const other = await connectImplicitTls(portOf(server, 'submissions'), undefined, TLS12);
    await other.client.expect('EHLO client.example', 250);
    await other.client.expect('QUIT', 221);
  });
});

describe.skipIf(CERT_SKIP_REASON !== undefined)('tls plugin: certificate reload', () => {
  it('reloads when the files change and serves the new certificate to new connections', async () => {
    const live = await makeCertificate(dir, 'live', 'mx.test.example');
    const server = await start({
      tls: { cert: live.certPath, key: live.keyPath, watch: true, watchDelay: 50 },
    });
    const store = certificateStoreOf(server.server.registry.service('tls'));
    if (!store) throw new Error('no certificate store');
    const first = await startTls(await server.connect());
    expect(first.fingerprint256).toBe(live.fingerprint256);

    const fresh = await makeCertificate(dir, 'fresh', 'mx.test.example');
    const reloaded = new Promise<void>((resolve) => {
      store.on('reloaded', (summaries) => {
        if (summaries[0]?.fingerprint256 === fresh.fingerprint256) resolve();
      });
    });
    await installCertificate(fresh, live);
    await reloaded;
    const second = await startTls(await server.connect());
    expect(second.fingerprint256).toBe(fresh.fingerprint256);

    // A broken file is refused and the working certificate stays in use.
    const failed = once(store, 'reloadFailed');
    await writeFile(live.certPath, 'not a certificate\n');
    await failed;
    const third = await startTls(await server.connect());
    expect(third.fingerprint256).toBe(fresh.fingerprint256);
  });

  it('reloads on SIGHUP', async () => {
    const live = await makeCertificate(dir, 'hup', 'mx.test.example');
    const server = await start({ tls: { cert: live.certPath, key: live.keyPath, reloadOnSighup: true } });
    const store = certificateStoreOf(server.server.registry.service('tls'));
    if (!store) throw new Error('no certificate store');
    const fresh = await makeCertificate(dir, 'hup-fresh', 'mx.test.example');
    await installCertificate(fresh, live);
    const reloaded = once(store, 'reloaded');
    process.emit('SIGHUP', 'SIGHUP');
    const [summaries] = await reloaded;
    expect(summaries[0]?.fingerprint256).toBe(fresh.fingerprint256);
    const s = await startTls(await server.connect());
    expect(s.fingerprint256).toBe(fresh.fingerprint256);
  });
});
