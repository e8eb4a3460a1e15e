/**
 * SMTPUTF8 (RFC 6531): UTF-8 addresses only in transactions that ask for it
 * (553 5.6.7 otherwise), `attributes.smtputf8`, and `with UTF8SMTP` in Received.
 */
import { describe, expect, it } from 'vitest';
import { type SmtpClient, startTestServer, type TestServer } from '../../core/testkit.ts';
import { plainTransport } from '../helpers/mailer.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

// rcpt-local matches A-labels: the IDN domain is listed in its ASCII form.
const LOCAL = ['rcpt-local', { domains: ['example.com', 'xn--bcher-kva.example'] }] as const;
const PLUGINS = ['8bitmime', 'smtputf8', LOCAL] as const;

async function session(): Promise<{ server: TestServer; client: SmtpClient; ehlo: readonly string[] }> {
  const server = await scope.start({ plugins: [...PLUGINS] });
  const client = await scope.connect(server);
  const ehlo = await client.expect('EHLO client.example', 250);
  return { server, client, ehlo: ehlo.lines };
}

describe('SMTPUTF8', () => {
  it('advertises SMTPUTF8 next to 8BITMIME', async () => {
    const { ehlo } = await session();
    expect(ehlo).toEqual(expect.arrayContaining(['8BITMIME', 'SMTPUTF8']));
  });

  it('cannot be configured without the 8bitmime plugin before it (RFC 6531 3.1)', async () => {
    await expect(startTestServer({ plugins: ['smtputf8'] })).rejects.toMatchObject({
      code: 'MF_CONFIG_INVALID',
      message: expect.stringContaining('"8bitmime"'),
    });
  });

  it('refuses UTF-8 addresses with 553 5.6.7 when MAIL did not ask for SMTPUTF8', async () => {
    const { client } = await session();
    await client.expect('MAIL FROM:<j\u00f6rg@b.example>', 553, '5.6.7');
    await client.expect('MAIL FROM:<a@b\u00fccher.example>', 553, '5.6.7');
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<\u7528\u6237@example.com>', 553, '5.6.7');
  });

  it('accepts UTF-8 local parts and domains with SMTPUTF8 and records the transaction as UTF8SMTP', async () => {
    const { server, client } = await session();
    await client.expect('MAIL FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8', 250, '2.1.0');
    await client.expect('RCPT TO:<\u7528\u6237@example.com>', 250, '2.1.5');
    await client.expect('RCPT TO:<z\u00f6e@b\u00fccher.example>', 250, '2.1.5');
    await client.expect('DATA', 354);
    expect((await client.sendData('Subject: \u00fcnicode\r\n\r\nhi\r\n')).code).toBe(250);
    const [m] = await server.waitForMessages(1);
    expect(m?.from).toBe('j\u00f6rg@b\u00fccher.example');
    expect(m?.recipients).toEqual(['\u7528\u6237@example.com', 'z\u00f6e@b\u00fccher.example']);
    expect(m?.attributes.smtputf8).toBe(true);
    expect(m?.text).toMatch(/^Received: from client\.example[^;]*with UTF8SMTP /);
    expect(m?.text).toContain('Subject: \u00fcnicode\r\n');
  });

  it('keeps a later transaction without SMTPUTF8 ASCII-only', async () => {
    const { client } = await session();
    await client.expect('MAIL FROM:<j\u00f6rg@b.example> SMTPUTF8', 250);
    await client.expect('RSET', 250);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<z\u00f6e@example.com>', 553, '5.6.7');
  });

  it('answers 501 5.5.4 to SMTPUTF8 with a value', async () => {
    const { client } = await session();
    await client.expect('MAIL FROM:<a@b.example> SMTPUTF8=yes', 501, '5.5.4');
  });

  it('without the plugin, SMTPUTF8 is an unknown parameter (555 5.5.4)', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example> SMTPUTF8', 555, '5.5.4');
  });

  it('nodemailer uses SMTPUTF8 for a UTF-8 address and the message arrives', async () => {
    const t = await scope.start({ plugins: [...PLUGINS] });
    const transport = plainTransport(t);
    const info = await transport.sendMail({
      from: 'j\u00f6rg@b.example',
      to: '\u7528\u6237@example.com',
      subject: 'Gr\u00fc\u00dfe',
      text: 'Hallo',
    });
    transport.close();
    expect(info.accepted).toEqual(['\u7528\u6237@example.com']);
    const [m] = await t.waitForMessages(1);
    expect(m?.from).toBe('j\u00f6rg@b.example');
    expect(m?.recipients).toEqual(['\u7528\u6237@example.com']);
    expect(m?.attributes.smtputf8).toBe(true);
    expect(m?.text).toMatch(/with UTF8SMTP /);
  });
});
