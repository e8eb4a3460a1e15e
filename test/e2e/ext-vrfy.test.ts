/**
 * VRFY and EXPN policy (RFC 5321 3.5, 7.3): 252 by default, 502 when refused,
 * or answers from static tables.
 */
import { describe, expect, it } from 'vitest';
import { type SmtpClient, startTestServer, type TestPlugin } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

async function session(plugins: readonly TestPlugin[], ehlo = true): Promise<SmtpClient> {
  const t = await scope.start({ plugins });
  const c = await scope.connect(t);
  if (ehlo) await c.expect('EHLO client.example', 250);
  return c;
}

describe('VRFY and EXPN', () => {
  it('without the plugin: VRFY 252, EXPN not implemented (502)', async () => {
    const client = await session([]);
    await client.expect('VRFY alice', 252, '2.5.0');
    await client.expect('EXPN staff', 502, '5.5.1');
  });

  it('default: VRFY 252 2.5.0, EXPN 502 5.5.1, 501 5.5.4 without an argument', async () => {
    const client = await session(['vrfy']);
    await client.expect('VRFY alice@example.com', 252, '2.5.0');
    await client.expect('EXPN staff@example.com', 502, '5.5.1');
    await client.expect('VRFY', 501, '5.5.4');
    await client.expect('EXPN', 501, '5.5.4');
  });

  it('answers before EHLO as well', async () => {
    const client = await session(['vrfy'], false);
    const r = await client.command('VRFY alice');
    expect([r.code, r.enhanced]).toEqual([252, undefined]);
  });

  it('mode reject: VRFY 502 5.5.1', async () => {
    const client = await session([['vrfy', { mode: 'reject' }]]);
    await client.expect('VRFY alice', 502, '5.5.1');
  });

  it('mode lookup: 250 2.1.5 for a listed mailbox, 550 5.1.1 otherwise, 553 5.1.4 when ambiguous', async () => {
    const mailboxes = ['alice@example.com', 'Bob@Example.com', 'carol@one.example', 'carol@two.example'];
    const client = await session([['vrfy', { mode: 'lookup', mailboxes }]]);
    expect((await client.expect('VRFY alice@example.com', 250, '2.1.5')).lines).toEqual([
      '<alice@example.com>',
    ]);
    expect((await client.expect('VRFY <BOB@example.COM>', 250, '2.1.5')).lines).toEqual([
      '<Bob@Example.com>',
    ]);
    expect((await client.expect('VRFY alice', 250, '2.1.5')).lines).toEqual(['<alice@example.com>']);
    await client.expect('VRFY mallory@example.com', 550, '5.1.1');
    await client.expect('VRFY alice@other.example', 550, '5.1.1');
    await client.expect('VRFY carol', 553, '5.1.4');
    expect((await client.expect('VRFY carol@two.example', 250, '2.1.5')).lines).toEqual([
      '<carol@two.example>',
    ]);
  });

  it('EXPN lookup lists the members, one per line', async () => {
    const lists = { 'staff@example.com': ['alice@example.com', 'bob@example.com'], 'empty@example.com': [] };
    const client = await session([['vrfy', { expn: 'lookup', lists }]]);
    const r = await client.expect('EXPN staff', 250, '2.1.5');
    expect(r.raw).toBe('250-2.1.5 <alice@example.com>\r\n250 2.1.5 <bob@example.com>\r\n');
    await client.expect('EXPN empty@example.com', 250, '2.1.5');
    await client.expect('EXPN nobody@example.com', 550, '5.1.1');
  });

  it('withholds UTF-8 answers (553 5.6.8) unless the command carries SMTPUTF8 (RFC 6531 3.7.4)', async () => {
    const mailboxes = ['j\u00f6rg@example.com', 'ann@example.com'];
    const lists = { 'team@example.com': ['ann@example.com', 'j\u00f6rg@example.com'] };
    const t = await scope.start({
      plugins: ['8bitmime', 'smtputf8', ['vrfy', { mode: 'lookup', mailboxes, expn: 'lookup', lists }]],
    });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('VRFY j\u00f6rg', 553, '5.6.8');
    expect((await c.expect('VRFY j\u00f6rg SMTPUTF8', 250, '2.1.5')).lines).toEqual([
      '<j\u00f6rg@example.com>',
    ]);
    expect((await c.expect('VRFY ann smtputf8', 250, '2.1.5')).lines).toEqual(['<ann@example.com>']);
    expect((await c.expect('VRFY ann', 250, '2.1.5')).lines).toEqual(['<ann@example.com>']);
    await c.expect('EXPN team', 553, '5.6.8');
    const r = await c.expect('EXPN team SMTPUTF8', 250, '2.1.5');
    expect(r.lines).toEqual(['<ann@example.com>', '<j\u00f6rg@example.com>']);
  });

  it('EXPN cannot-verify answers 252 2.5.0', async () => {
    const client = await session([['vrfy', { expn: 'cannot-verify' }]]);
    await client.expect('EXPN staff', 252, '2.5.0');
  });

  it('rejects an unknown mode at start-up', async () => {
    await expect(startTestServer({ plugins: [['vrfy', { mode: 'always' }]] })).rejects.toMatchObject({
      code: 'MF_CONFIG_INVALID',
    });
  });

  it('leaves a transaction alone', async () => {
    const client = await session([
      ['vrfy', { mode: 'lookup', mailboxes: ['alice@example.com'] }],
      ['rcpt-local', { domains: ['example.com'] }],
    ]);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('VRFY alice', 250);
    await client.expect('RCPT TO:<alice@example.com>', 250);
    await client.expect('DATA', 354);
    expect((await client.sendData('Subject: x\r\n\r\ny\r\n')).code).toBe(250);
  });
});
