/**
 * DSN (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT, decoded
 * from xtext and carried with the message into the queue; 501 5.5.4 for
 * malformed or repeated parameters.
 */
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestPlugin, TestServer } from '../../core/testkit.ts';
import { plainTransport } from '../helpers/mailer.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

async function session(
  plugins: readonly TestPlugin[] = ['dsn', LOCAL],
): Promise<{ server: TestServer; client: SmtpClient; ehlo: readonly string[] }> {
  // Many refusals in one session: raise the error limit so none closes it.
  const server = await scope.start({ plugins, config: { limits: { maxErrors: 50 } } });
  const client = await scope.connect(server);
  const ehlo = await client.expect('EHLO client.example', 250);
  return { server, client, ehlo: ehlo.lines };
}

async function finish(client: SmtpClient): Promise<void> {
  await client.expect('DATA', 354);
  expect((await client.sendData('Subject: dsn\r\n\r\nbody\r\n')).code).toBe(250);
}

describe('DSN', () => {
  it('advertises DSN', async () => {
    const { ehlo } = await session();
    expect(ehlo).toContain('DSN');
  });

  it('stores RET, ENVID, NOTIFY and ORCPT with the message', async () => {
    const { server, client } = await session();
    await client.expect('MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ314159', 250, '2.1.0');
    await client.expect('RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Example.com', 250);
    await client.expect('RCPT TO:<carol@example.com> notify=never', 250);
    await client.expect('RCPT TO:<dave@example.com>', 250);
    await finish(client);
    const [m] = await server.waitForMessages(1);
    expect(m?.attributes.dsn).toEqual({ ret: 'HDRS', envid: 'QQ314159' });
    expect(m?.recipientAttributes).toEqual([
      { dsn: { notify: ['SUCCESS', 'FAILURE'], orcpt: { type: 'rfc822', address: 'Bob@Example.com' } } },
      { dsn: { notify: ['NEVER'] } },
      {},
    ]);
  });

  it('decodes xtext in ENVID and ORCPT', async () => {
    const { server, client } = await session();
    await client.expect('MAIL FROM:<a@b.example> ENVID=a+2Bb+3Dc+20d RET=full', 250);
    await client.expect('RCPT TO:<bob@example.com> ORCPT=RFC822;x+2By@example.com NOTIFY=DELAY', 250);
    await finish(client);
    const [m] = await server.waitForMessages(1);
    expect(m?.attributes.dsn).toEqual({ envid: 'a+b=c d', ret: 'FULL' });
    expect(m?.recipientAttributes[0]?.dsn).toEqual({
      orcpt: { type: 'rfc822', address: 'x+y@example.com' },
      notify: ['DELAY'],
    });
  });

  it('answers 501 5.5.4 to malformed MAIL parameters', async () => {
    const { client } = await session();
    const bad = [
      'RET=BOTH',
      'RET',
      `ENVID=${'x'.repeat(101)}`,
      'ENVID',
      'ENVID=a+2',
      'ENVID=a+2b',
      'ENVID=+00',
      'RET=FULL RET=HDRS',
      'ENVID=a ENVID=b',
    ];
    for (const params of bad) await client.expect(`MAIL FROM:<a@b.example> ${params}`, 501, '5.5.4');
    await client.expect(`MAIL FROM:<a@b.example> ENVID=${'x'.repeat(100)}`, 250);
  });

  it('answers 501 5.5.4 to malformed RCPT parameters', async () => {
    const { server, client } = await session();
    await client.expect('MAIL FROM:<a@b.example>', 250);
    const bad = [
      'NOTIFY=NEVER,SUCCESS',
      'NOTIFY=SUCCESS,SUCCESS',
      'NOTIFY=SUCCESS,',
      'NOTIFY=BOGUS',
      'NOTIFY',
      'ORCPT=bob@example.com',
      'ORCPT=;bob@example.com',
      'ORCPT=rfc822;',
      'ORCPT=rfc822;bob+0A@example.com',
      `ORCPT=rfc822;${'x'.repeat(500)}`,
      'NOTIFY=DELAY NOTIFY=FAILURE',
    ];
    for (const params of bad) await client.expect(`RCPT TO:<bob@example.com> ${params}`, 501, '5.5.4');
    await client.expect('RCPT TO:<bob@example.com> NOTIFY=FAILURE', 250);
    await finish(client);
    const [m] = await server.waitForMessages(1);
    expect(m?.recipientAttributes).toEqual([{ dsn: { notify: ['FAILURE'] } }]);
  });

  it('lets RCPT grow by 500 octets for ORCPT', async () => {
    const { server, client } = await session();
    await client.expect('MAIL FROM:<a@b.example>', 250);
    const long = `${'l'.repeat(64)}@${'d'.repeat(400)}.example`;
    const line = `RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;${long}`;
    expect(line.length).toBeGreaterThan(510);
    await client.expect(line, 250);
    await finish(client);
    const [m] = await server.waitForMessages(1);
    expect(m?.recipientAttributes[0]?.dsn?.orcpt?.address).toBe(long);
  });

  it('decodes a utf-8 ORCPT (RFC 6533): \\x{HEX} always, raw UTF-8 only with SMTPUTF8', async () => {
    const { server, client } = await session(['8bitmime', 'smtputf8', 'dsn', LOCAL]);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com> ORCPT=utf-8;j\\x{F6}rg@example.com', 250);
    await client.expect('RCPT TO:<carol@example.com> ORCPT=utf-8;j\u00f6rg@example.com', 501, '5.5.4');
    await client.expect('RCPT TO:<carol@example.com> ORCPT=utf-8;bad\\x{D800}@example.com', 501, '5.5.4');
    await finish(client);
    await client.expect('MAIL FROM:<a@b.example> SMTPUTF8', 250);
    await client.expect('RCPT TO:<carol@example.com> ORCPT=utf-8;z\u00f6e@example.com', 250);
    await client.expect('RCPT TO:<dave@example.com> ORCPT=rfc822;z\u00f6e@example.com', 501, '5.5.4');
    await finish(client);
    const [first, second] = await server.waitForMessages(2);
    expect(first?.recipientAttributes[0]?.dsn?.orcpt).toEqual({
      type: 'utf-8',
      address: 'j\u00f6rg@example.com',
    });
    expect(second?.recipientAttributes[0]?.dsn?.orcpt).toEqual({
      type: 'utf-8',
      address: 'z\u00f6e@example.com',
    });
  });

  it('without the plugin, DSN parameters are unknown (555 5.5.4)', async () => {
    const { client } = await session([LOCAL]);
    await client.expect('MAIL FROM:<a@b.example> RET=FULL', 555, '5.5.4');
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com> NOTIFY=NEVER', 555, '5.5.4');
  });

  it("carries nodemailer's dsn option into the queue", async () => {
    const t = await scope.start({ plugins: ['dsn', LOCAL] });
    const transport = plainTransport(t);
    const info = await transport.sendMail({
      from: 'a@b.example',
      to: 'bob@example.com',
      subject: 'dsn',
      text: 'hello',
      dsn: {
        id: 'env+id=1',
        return: 'headers',
        notify: ['success', 'failure'],
        recipient: 'orig@example.com',
      },
    });
    transport.close();
    expect(info.accepted).toEqual(['bob@example.com']);
    const [m] = await t.waitForMessages(1);
    expect(m?.attributes.dsn).toEqual({ ret: 'HDRS', envid: 'env+id=1' });
    expect(m?.recipientAttributes).toEqual([
      { dsn: { notify: ['SUCCESS', 'FAILURE'], orcpt: { type: 'rfc822', address: 'orig@example.com' } } },
    ]);
  });
});
