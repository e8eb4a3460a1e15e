/**
 * Message submission (RFC 6409, RFC 8314) as configured in
 * examples/submission/mailframe.json: STARTTLS on the `submission` listener,
 * implicit TLS on `submissions`, AUTH required before MAIL, relaying for
 * authenticated users, fully-qualified envelope domains.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTransport } from 'nodemailer';
import { describe, expect, it } from 'vitest';
import type { TestPlugin, TestServer } from '../../core/testkit.ts';
import { CERT_SKIP_REASON, connectImplicitTls, startTls, upgradeClient } from '../helpers/certs.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

const EXAMPLE = join(import.meta.dirname, '../../examples/submission/mailframe.json');
/** The test-only user of examples/submission/users.json. */
const USER = 'alice';
const PASSWORD = 'example-only-password';

const plainIR = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');

interface ExampleConfig {
  hostname: string;
  listeners: Array<{ name: string; role: 'mx' | 'submission'; implicitTls?: boolean }>;
  plugins: Array<{ plugin: string; config?: Record<string, unknown> }>;
}

/**
 * The example as it is, on loopback ports: its listeners (port 0), its
 * plugins in its order, except that the test kit's capture queue stands in
 * for `queue-fs`. An `mx` listener is added to show what is submission-only.
 */
async function startExample(): Promise<TestServer> {
  const example = JSON.parse(readFileSync(EXAMPLE, 'utf8')) as ExampleConfig;
  const plugins: TestPlugin[] = example.plugins
    .filter((p) => p.plugin !== 'queue-fs')
    .map((p) => [p.plugin, p.config ?? {}] as const);
  return scope.start({
    standardExtensions: false,
    plugins,
    config: {
      hostname: example.hostname,
      listeners: [
        ...example.listeners.map((l) => ({ ...l, host: '127.0.0.1', port: 0 })),
        { name: 'mx', host: '127.0.0.1', port: 0, role: 'mx' as const },
      ],
    },
  });
}

function portOf(server: TestServer, name: string): number {
  const a = server.server.addresses().find((x) => x.name === name);
  if (!a) throw new Error(`no listener ${name}`);
  return a.port;
}

describe.skipIf(CERT_SKIP_REASON !== undefined)('submission (examples/submission)', () => {
  it('port 587: STARTTLS, then AUTH; MAIL before AUTH is 530 5.7.0; Received says ESMTPSA', async () => {
    const server = await startExample();
    const c = await server.connect({ listener: 'submission' });
    const plain = await c.expect('EHLO client.example', 250);
    expect(plain.lines).toContain('STARTTLS');
    expect(plain.lines.some((l) => l.startsWith('AUTH'))).toBe(false);
    await c.expect('MAIL FROM:<alice@example.com>', 530, '5.7.0');
    await c.expect(`AUTH PLAIN ${plainIR(USER, PASSWORD)}`, 538, '5.7.11');
    await c.expect('STARTTLS', 220);
    const s = (await upgradeClient(c)).client;
    const ehlo = await s.expect('EHLO client.example', 250);
    expect(ehlo.lines).toContain('AUTH PLAIN LOGIN');
    expect(ehlo.lines).not.toContain('STARTTLS');
    await s.expect('MAIL FROM:<alice@example.com>', 530, '5.7.0');
    await s.expect(`AUTH PLAIN ${plainIR(USER, 'wrong')}`, 535, '5.7.8');
    await s.expect(`AUTH PLAIN ${plainIR(USER, PASSWORD)}`, 235, '2.7.0');
    await s.expect('MAIL FROM:<alice@example.com>', 250);
    await s.expect('RCPT TO:<friend@elsewhere.example>', 250);
    await s.expect('DATA', 354);
    expect((await s.sendData('Subject: submitted\r\n\r\nhello\r\n')).code).toBe(250);
    const [m] = await server.waitForMessages(1);
    expect(m?.recipients).toEqual(['friend@elsewhere.example']);
    expect(m?.text).toMatch(
      /^Received: from client\.example .*\r\n\tby mail\.example\.com \(mailframe\) with ESMTPSA id/,
    );
  });

  it('port 465: greets over TLS, offers AUTH and not STARTTLS, requires AUTH before MAIL', async () => {
    const server = await startExample();
    const s = await connectImplicitTls(portOf(server, 'submissions'));
    expect(s.client.greeting?.code).toBe(220);
    const ehlo = await s.client.expect('EHLO client.example', 250);
    expect(ehlo.lines).toContain('AUTH PLAIN LOGIN');
    expect(ehlo.lines).not.toContain('STARTTLS');
    await s.client.expect('MAIL FROM:<alice@example.com>', 530, '5.7.0');
    await s.client.expect(`AUTH PLAIN ${plainIR(USER, PASSWORD)}`, 235);
    await s.client.expect('MAIL FROM:<alice@example.com> AUTH=alice+40example.com', 250);
    await s.client.expect('RCPT TO:<friend@elsewhere.example>', 250);
    await s.client.expect('DATA', 354);
    expect((await s.client.sendData('Subject: 465\r\n\r\nhello\r\n')).code).toBe(250);
    const [m] = await server.waitForMessages(1);
    expect(m?.text).toMatch(/with ESMTPSA id/);
    expect(m?.attributes.auth).toBe('alice@example.com');
  });

  it('refuses envelope domains that are not fully qualified with 554 (RFC 6409 section 4.2)', async () => {
    const server = await startExample();
    const s = await connectImplicitTls(portOf(server, 'submissions'));
    await s.client.expect('EHLO client.example', 250);
    await s.client.expect(`AUTH PLAIN ${plainIR(USER, PASSWORD)}`, 235);
    await s.client.expect('MAIL FROM:<alice@laptop>', 554, '5.1.8');
    await s.client.expect('MAIL FROM:<alice@example.com>', 250);
    await s.client.expect('RCPT TO:<bob@intranet>', 554, '5.1.2');
    await s.client.expect('RCPT TO:<bob@[192.0.2.1]>', 250);
    await s.client.expect('RCPT TO:<Postmaster>', 250);
  });

  it('keeps mx rules on an mx listener: no AUTH needed for local mail, no relaying without AUTH', async () => {
    const server = await startExample();
    const c = await server.connect({ listener: 'mx' });
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<someone@laptop>', 250);
    await c.expect('RCPT TO:<alice@example.com>', 250);
    await c.expect('RCPT TO:<friend@elsewhere.example>', 550, '5.7.1');
  });

  it('nodemailer submits on 465 (implicit TLS) and on 587 (STARTTLS) with AUTH PLAIN', async () => {
    const server = await startExample();
    for (const [listener, secure] of [
      ['submissions', true],
      ['submission', false],
    ] as const) {
      const transport = createTransport({
        host: '127.0.0.1',
        port: portOf(server, listener),
        secure,
        requireTLS: !secure,
        name: 'client.example',
        tls: { rejectUnauthorized: false },
        auth: { user: USER, pass: PASSWORD },
        authMethod: 'PLAIN',
      });
      try {
        const info = await transport.sendMail({
          from: 'alice@example.com',
          to: 'friend@elsewhere.example',
          subject: `via ${listener}`,
          text: 'hello',
        });
        expect(info.accepted).toEqual(['friend@elsewhere.example']);
      } finally {
        transport.close();
      }
    }
    const queued = await server.waitForMessages(2);
    expect(queued.every((m) => /with ESMTPSA id/.test(m.text))).toBe(true);
  });

  it('uses a generated self-signed certificate for the host name (selfSigned)', async () => {
    const server = await startExample();
    const s = await startTls(await server.connect({ listener: 'submission' }));
    const peer = s.socket.getPeerCertificate();
    expect(peer.subject.CN).toBe('mail.example.com');
    expect(peer.subjectaltname).toBe('DNS:mail.example.com');
  });
});
