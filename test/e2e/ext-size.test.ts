/**
 * SIZE (RFC 1870): the advertised maximum, SIZE= on MAIL (552 5.3.4 above it,
 * 501 5.5.4 when malformed), and data past the limit refused only after it was
 * read to its end, through DATA and through BDAT.
 */
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { type SmtpClient, startTestServer, type TestPlugin, type TestServer } from '../../core/testkit.ts';
import { plainTransport } from '../helpers/mailer.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;
const LIMIT = 2048;
const config = { limits: { maxMessageSize: LIMIT } };

async function start(plugins: readonly TestPlugin[]): Promise<TestServer> {
  return scope.start({ plugins, config });
}

async function session(server: TestServer): Promise<SmtpClient> {
  const c = await scope.connect(server);
  await c.expect('EHLO client.example', 250);
  return c;
}

describe('SIZE', () => {
  it('advertises limits.maxMessageSize', async () => {
    const server = await start(['size', LOCAL]);
    const c = await scope.connect(server);
    const ehlo = await c.expect('EHLO client.example', 250);
    expect(ehlo.lines).toContain(`SIZE ${LIMIT}`);
  });

  it('advertises and enforces a smaller configured size', async () => {
    const server = await start([['size', { advertise: 1500 }], LOCAL]);
    const c = await scope.connect(server);
    const ehlo = await c.expect('EHLO client.example', 250);
    expect(ehlo.lines).toContain('SIZE 1500');
    await c.expect('MAIL FROM:<a@b.example> SIZE=1501', 552, '5.3.4');
    await c.expect('MAIL FROM:<a@b.example> SIZE=1500', 250, '2.1.0');
  });

  it('refuses to start when the advertised size exceeds the limit', async () => {
    await expect(
      startTestServer({ plugins: [['size', { advertise: LIMIT + 1 }]], config }),
    ).rejects.toMatchObject({ code: 'MF_PLUGIN_REGISTER' });
  });

  it('answers 552 5.3.4 to a declared size above the limit and accepts one at it', async () => {
    const server = await start(['size', LOCAL]);
    const client = await session(server);
    await client.expect(`MAIL FROM:<a@b.example> SIZE=${LIMIT + 1}`, 552, '5.3.4');
    await client.expect('MAIL FROM:<a@b.example> SIZE=99999999999999999999', 552, '5.3.4');
    await client.expect(`MAIL FROM:<a@b.example> SIZE=${LIMIT}`, 250, '2.1.0');
    await client.expect('RSET', 250);
    await client.expect('MAIL FROM:<a@b.example> SIZE=0', 250, '2.1.0');
  });

  it('answers 501 5.5.4 to a malformed SIZE', async () => {
    const server = await start(['size', LOCAL]);
    const client = await session(server);
    for (const bad of ['SIZE=abc', 'SIZE', 'SIZE=-1', 'SIZE=1e3', 'SIZE=123456789012345678901', 'SIZE=']) {
      await client.expect(`MAIL FROM:<a@b.example> ${bad}`, 501, '5.5.4');
    }
    await client.expect('MAIL FROM:<a@b.example> size=100', 250, '2.1.0');
  });

  it('without the plugin, SIZE= is an unknown parameter (555 5.5.4)', async () => {
    const server = await start([LOCAL]);
    const client = await session(server);
    await client.expect('MAIL FROM:<a@b.example> SIZE=100', 555, '5.5.4');
  });

  it('reads DATA past the limit to its end, then answers 552 5.3.4 and stays usable', async () => {
    const server = await start(['size', LOCAL]);
    const client = await session(server);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com>', 250);
    await client.expect('DATA', 354);
    const line = `${'x'.repeat(98)}\r\n`;
    // 30 lines of 100 octets: 3000 > 2048. A command-looking line inside must stay data.
    client.send(`Subject: big\r\n\r\n${line.repeat(15)}RSET\r\n${line.repeat(15)}.\r\n`);
    const r = await client.read();
    expect([r.code, r.enhanced]).toEqual([552, '5.3.4']);
    await client.expect('NOOP', 250);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com>', 250);
    await client.expect('DATA', 354);
    const ok = await client.sendData('Subject: small\r\n\r\nfits\r\n');
    expect(ok.code).toBe(250);
    const queued = await server.waitForMessages(1);
    expect(queued).toHaveLength(1);
    expect(queued[0]?.text).toContain('Subject: small');
  });

  it('counts BDAT chunks together: 552 5.3.4 at LAST when they exceed the limit', async () => {
    const server = await start(['size', 'chunking', LOCAL]);
    const client = await session(server);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com>', 250);
    const chunk = 'y'.repeat(1000);
    client.send(`BDAT 1000\r\n${chunk}`);
    expect((await client.read()).code).toBe(250);
    client.send(`BDAT 1000\r\n${chunk}`);
    expect((await client.read()).code).toBe(250);
    client.send(`BDAT 1000 LAST\r\n${chunk}`);
    const r = await client.read();
    expect([r.code, r.enhanced]).toEqual([552, '5.3.4']);
    // The transaction is over and the stream is still in step.
    await client.expect('NOOP', 250);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    expect(server.queued).toHaveLength(0);
  });

  it('nodemailer sends SIZE= from the envelope and the message is accepted', async () => {
    const seen: Array<string | true | undefined> = [];
    const recorder = definePlugin({
      name: 'test-size-recorder',
      schema: Type.Object({}),
      register(api) {
        api.hooks.mail.tap((_tx, from) => {
          seen.push(from.params.get('SIZE'));
          return undefined;
        });
      },
    });
    const server = await start(['size', recorder, LOCAL]);
    const transport = plainTransport(server);
    const raw = 'From: a@b.example\r\nTo: bob@example.com\r\nSubject: sized\r\n\r\nhello\r\n';
    const envelope = { from: 'a@b.example', to: ['bob@example.com'], size: Buffer.byteLength(raw) };
    const info = await transport.sendMail({ envelope, raw });
    expect(info.accepted).toEqual(['bob@example.com']);
    expect(seen).toEqual([String(Buffer.byteLength(raw))]);
    // nodemailer reads the advertised maximum and refuses a larger message itself.
    const big = { from: 'a@b.example', to: ['bob@example.com'], size: LIMIT + 1 };
    await expect(transport.sendMail({ envelope: big, raw })).rejects.toMatchObject({
      message: expect.stringContaining(`allowed ${LIMIT}`),
    });
    transport.close();
    expect(server.queued).toHaveLength(1);
  });
});
