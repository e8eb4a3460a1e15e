/**
 * The command set of RFC 5321 (greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET,
 * NOOP, QUIT, VRFY, HELP), reply sequencing (503), syntax errors (501/500/555)
 * and the core's recipient policy. Replies to commands before EHLO carry no
 * enhanced status code: RFC 2034 only applies once EHLO advertised it.
 */
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestServer } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com', 'c.example'] }] as const;

async function session(t: TestServer): Promise<SmtpClient> {
  const c = await scope.connect(t);
  await c.expect('EHLO client.example', 250);
  return c;
}

describe('greeting and EHLO/HELO', () => {
  it('greets with 220 and the host name', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    expect(c.greeting?.code).toBe(220);
    expect(c.greeting?.raw).toBe('220 mx.test.example ESMTP mailframe\r\n');
  });

  it('answers EHLO with a multi-line 250 listing the keywords', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    const r = await c.expect('EHLO client.example', 250);
    const lines = r.raw.split('\r\n').slice(0, -1);
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const l of lines.slice(0, -1)) expect(l.startsWith('250-')).toBe(true);
    expect(lines.at(-1)?.startsWith('250 ')).toBe(true);
    expect(lines[0]).toBe('250-mx.test.example greets client.example');
    expect(r.lines.slice(1)).toEqual(expect.arrayContaining(['ENHANCEDSTATUSCODES', 'PIPELINING']));
    // RFC 2034: the EHLO response itself carries no enhanced code.
    expect(r.enhanced).toBeUndefined();
  });

  it('answers HELO with a single 250 line and no keywords', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    const r = await c.expect('HELO client.example', 250);
    expect(r.raw).toBe('250 mx.test.example\r\n');
  });

  it('uses no enhanced status codes after HELO', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await scope.connect(t);
    await c.expect('HELO client.example', 250);
    expect((await c.expect('MAIL FROM:<a@b.example>', 250)).raw).toBe('250 Sender OK\r\n');
    expect((await c.expect('RCPT TO:<x@nowhere.example>', 550)).enhanced).toBeUndefined();
    expect((await c.expect('NOOP', 250)).enhanced).toBeUndefined();
  });

  it('drops enhanced status codes when HELO follows EHLO', async () => {
    const t = await scope.start();
    const c = await session(t);
    expect((await c.expect('NOOP', 250)).enhanced).toBe('2.0.0');
    await c.expect('HELO client.example', 250);
    expect((await c.expect('NOOP', 250)).enhanced).toBeUndefined();
  });

  it('refuses EHLO and HELO without a domain with 501 5.5.4', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    // Before EHLO nothing was negotiated: plain 501.
    expect((await c.expect('EHLO', 501)).enhanced).toBeUndefined();
    await c.expect('EHLO client.example', 250);
    await c.expect('EHLO', 501, '5.5.4');
    await c.expect('HELO   ', 501, '5.5.4');
    // The refused EHLO did not undo the earlier one.
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  });
});

describe('simple commands', () => {
  it('RSET answers 250 2.0.0; with an argument 501 5.5.4', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('RSET', 250, '2.0.0');
    await c.expect('RSET now', 501, '5.5.4');
  });

  it('NOOP answers 250 2.0.0, also with an argument', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('NOOP', 250, '2.0.0');
    await c.expect('NOOP ignored text', 250, '2.0.0');
  });

  it('QUIT answers 221 2.0.0 and closes the connection', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('QUIT', 221, '2.0.0');
    await c.waitClosed();
    expect(c.pending).toBe('');
  });

  it('QUIT works before EHLO', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    expect((await c.expect('QUIT', 221)).raw.startsWith('221 ')).toBe(true);
    await c.waitClosed();
  });

  it('VRFY answers 252 2.5.0; without an argument 501 5.5.4', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('VRFY bob', 252, '2.5.0');
    await c.expect('VRFY', 501, '5.5.4');
  });

  it('HELP answers 214', async () => {
    const t = await scope.start();
    const c = await session(t);
    const r = await c.expect('HELP', 214, '2.0.0');
    expect(r.raw.startsWith('214-2.0.0 ')).toBe(true);
  });

  it('answers an unknown verb with 500 5.5.2 and keeps going', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('FROB nicate', 500, '5.5.2');
    await c.expect('XYZZY', 500, '5.5.2');
    await c.expect('NOOP', 250, '2.0.0');
  });

  it('treats verbs case-insensitively', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await scope.connect(t);
    await c.expect('ehlo client.example', 250);
    await c.expect('mail from:<a@b.example>', 250, '2.1.0');
    await c.expect('rcpt to:<bob@example.com>', 250, '2.1.5');
    await c.expect('rset', 250, '2.0.0');
  });
});

describe('command sequencing (503)', () => {
  it('refuses MAIL before EHLO with 503', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    const r = await c.expect('MAIL FROM:<a@b.example>', 503);
    expect(r.enhanced).toBeUndefined();
    expect(r.lines[0]).toMatch(/EHLO/);
  });

  it('refuses RCPT before MAIL with 503 5.5.1', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('RCPT TO:<bob@example.com>', 503, '5.5.1');
  });

  it('refuses DATA before MAIL with 503 5.5.1', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('DATA', 503, '5.5.1');
  });

  it('refuses a nested MAIL with 503 5.5.1 and keeps the first sender', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<first@b.example>', 250, '2.1.0');
    await c.expect('MAIL FROM:<second@b.example>', 503, '5.5.1');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    await c.sendData('Subject: x\r\n\r\nbody\r\n');
    const [m] = await t.waitForMessages(1);
    expect(m?.from).toBe('first@b.example');
  });

  it('answers DATA with no accepted recipient with 554 5.5.1', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('DATA', 554, '5.5.1');
    await c.expect('RCPT TO:<bob@elsewhere.example>', 550, '5.7.1');
    await c.expect('DATA', 554, '5.5.1');
    // The transaction is still open: a good recipient makes DATA work.
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
  });

  it('RSET ends the transaction: RCPT afterwards is 503 5.5.1', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RSET', 250, '2.0.0');
    await c.expect('RCPT TO:<bob@example.com>', 503, '5.5.1');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  });

  it('EHLO in the middle of a transaction resets it', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('EHLO client.example', 250);
    await c.expect('RCPT TO:<bob@example.com>', 503, '5.5.1');
    await c.expect('DATA', 503, '5.5.1');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  });
});

describe('MAIL and RCPT syntax', () => {
  it('refuses MAIL without FROM: or angle brackets with 501 5.5.4', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('MAIL', 501, '5.5.4');
    await c.expect('MAIL <a@b.example>', 501, '5.5.4');
    await c.expect('MAIL FROM <a@b.example>', 501, '5.5.4');
    await c.expect('MAIL FROM:a@b.example', 501, '5.5.4');
    await c.expect('MAIL FROM:<a@b.example', 501, '5.5.4');
  });

  it('refuses a bad sender address with 501 5.1.7', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('MAIL FROM:<a b@b.example>', 501, '5.1.7');
    await c.expect('MAIL FROM:<a@@b.example>', 501, '5.1.7');
    await c.expect('MAIL FROM:<a@-b.example>', 501, '5.1.7');
    await c.expect('MAIL FROM:<Postmaster>', 501, '5.1.7');
  });

  it('refuses a bad recipient address with 501 5.1.3', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@@example.com>', 501, '5.1.3');
    await c.expect('RCPT TO:<bob@example..com>', 501, '5.1.3');
    await c.expect('RCPT TO:<>', 501, '5.1.3');
    await c.expect('RCPT TO:bob@example.com', 501, '5.5.4');
  });

  it('accepts spaces after the colon and a case-insensitive prefix', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL from: <a@b.example>', 250, '2.1.0');
    await c.expect('RCPT To:<bob@example.com>', 250, '2.1.5');
  });

  it('refuses unknown MAIL and RCPT parameters with 555 5.5.4', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example> FROBNICATE=yes', 555, '5.5.4');
    await c.expect('MAIL FROM:<a@b.example> XFLAG', 555, '5.5.4');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com> NOTIFY=NEVER', 555, '5.5.4');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
  });

  it('refuses malformed parameters with 501 5.5.4', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example> =x', 501, '5.5.4');
    await c.expect('MAIL FROM:<a@b.example>X=1', 501, '5.5.4');
  });

  it('accepts the null reverse-path <>', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: bounce\r\n\r\nx\r\n')).code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(m?.from).toBe('');
  });

  it('accepts a source route and ignores it', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<@relay.example:a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<@a.example:b@c.example>', 250, '2.1.5');
    await c.expect('RCPT TO:<@a.example,@d.example:x@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: route\r\n\r\nx\r\n')).code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(m?.from).toBe('a@b.example');
    expect(m?.recipients).toEqual(['b@c.example', 'x@example.com']);
  });

  it('accepts RCPT TO:<Postmaster> through rcpt-local', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<Postmaster>', 250, '2.1.5');
    await c.expect('RCPT TO:<postmaster@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: pm\r\n\r\nx\r\n')).code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toEqual(['Postmaster', 'postmaster@example.com']);
  });

  it('preserves the case of the local part', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<Alice.Smith@B.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<Bob.Jones@EXAMPLE.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    await c.sendData('Subject: case\r\n\r\nx\r\n');
    const [m] = await t.waitForMessages(1);
    expect(m?.from).toBe('Alice.Smith@B.example');
    expect(m?.recipients).toEqual(['Bob.Jones@EXAMPLE.com']);
  });

  it('enforces RFC 5321 length limits on local parts and paths', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect(`MAIL FROM:<${'s'.repeat(65)}@b.example>`, 501, '5.1.7');
    await c.expect(`MAIL FROM:<${'s'.repeat(64)}@b.example>`, 250, '2.1.0');
    await c.expect(`RCPT TO:<${'r'.repeat(65)}@example.com>`, 501, '5.1.3');
    await c.expect(`RCPT TO:<${'r'.repeat(64)}@example.com>`, 250, '2.1.5');
    // A path of more than 256 octets, brackets included.
    const domain = (n: number) =>
      `${'d'.repeat(60)}.${'e'.repeat(60)}.${'f'.repeat(60)}.${'g'.repeat(n)}.example`;
    expect(`<x@${domain(62)}>`.length).toBe(257);
    await c.expect(`RCPT TO:<x@${domain(62)}>`, 501, '5.1.3');
    await c.expect(`RCPT TO:<x@${domain(61)}>`, 550, '5.7.1');
  });

  it('accepts address literals in EHLO and in addresses', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await scope.connect(t);
    await c.expect('EHLO [127.0.0.1]', 250);
    await c.expect('MAIL FROM:<a@[192.0.2.1]>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@[IPv6:2001:db8::1]>', 550, '5.7.1');
  });

  it('refuses non-ASCII addresses without SMTPUTF8 with 553 5.6.7', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<jöran@b.example>', 553, '5.6.7');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<ünsere@example.com>', 553, '5.6.7');
    await c.expect('RCPT TO:<bob@exämple.com>', 553, '5.6.7');
  });
});

describe('recipient policy', () => {
  it('refuses a recipient no plugin accepts with 550 5.7.1 (no open relay)', async () => {
    const t = await scope.start();
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 550, '5.7.1');
    await c.expect('DATA', 554, '5.5.1');
  });

  it('refuses an unknown mailbox with 550 5.1.1 when rcpt-local lists mailboxes', async () => {
    const t = await scope.start({
      plugins: [['rcpt-local', { domains: ['example.com'], mailboxes: ['alice', 'bob@example.com'] }]],
    });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<alice@example.com>', 250, '2.1.5');
    await c.expect('RCPT TO:<BOB@example.com>', 250, '2.1.5');
    await c.expect('RCPT TO:<carol@example.com>', 550, '5.1.1');
    await c.expect('RCPT TO:<alice@other.example>', 550, '5.7.1');
  });

  it('refuses recipients beyond limits.maxRecipients with 452 4.5.3', async () => {
    const t = await scope.start({ plugins: [LOCAL], config: { limits: { maxRecipients: 2 } } });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<r1@example.com>', 250, '2.1.5');
    await c.expect('RCPT TO:<r2@example.com>', 250, '2.1.5');
    await c.expect('RCPT TO:<r3@example.com>', 452, '4.5.3');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: many\r\n\r\nx\r\n')).code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toEqual(['r1@example.com', 'r2@example.com']);
  });

  it('counts only accepted recipients against maxRecipients', async () => {
    const t = await scope.start({ plugins: [LOCAL], config: { limits: { maxRecipients: 2 } } });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<r1@elsewhere.example>', 550, '5.7.1');
    await c.expect('RCPT TO:<r2@elsewhere.example>', 550, '5.7.1');
    await c.expect('RCPT TO:<r1@example.com>', 250, '2.1.5');
    await c.expect('RCPT TO:<r2@example.com>', 250, '2.1.5');
  });
});

describe('a full transaction', () => {
  it('queues the message with its envelope and answers 250 2.0.0', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await session(t);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('RCPT TO:<carol@c.example>', 250, '2.1.5');
    const go = await c.expect('DATA', 354);
    expect(go.enhanced).toBeUndefined();
    const r = await c.sendData('Subject: hi\r\n\r\nhello\r\n');
    expect(r.code).toBe(250);
    expect(r.enhanced).toBe('2.0.0');
    const [m] = await t.waitForMessages(1);
    expect(r.lines[0]).toContain(m?.id);
    expect(m?.from).toBe('a@b.example');
    expect(m?.recipients).toEqual(['bob@example.com', 'carol@c.example']);
    // A second transaction on the same connection.
    await c.expect('MAIL FROM:<a2@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: again\r\n\r\nx\r\n')).code).toBe(250);
    const all = await t.waitForMessages(2);
    expect(all[1]?.from).toBe('a2@b.example');
  });
});
