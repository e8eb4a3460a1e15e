/**
 * Command syntax held to the RFCs, byte for byte over raw sockets:
 * - after HELO (not EHLO) no service extension is in effect, so an ESMTP
 *   parameter on MAIL or RCPT is `555 5.5.4` (RFC 5321 4.1.1.1, RFC 1869);
 * - a command line ends in CRLF; one ending in a bare LF is refused
 *   (RFC 5321 2.3.8, 4.1.1) unless `smtp.commandBareLineFeed` is `accept`;
 * - a command line is at most 512 octets (RFC 5321 4.5.3.1.4); an extension
 *   raises that only for its own command (AUTH: 12288, RFC 4954 section 4) or
 *   for MAIL/RCPT lines that carry its parameters (SIZE +26, RFC 1870; ORCPT
 *   +507, RFC 3461; AUTH= +500, RFC 4954 section 5).
 */
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestServer, TestServerOptions } from '../../core/testkit.ts';
import { splitReplies } from '../helpers/raw-socket.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;
const EXTENSIONS = [
  'size',
  '8bitmime',
  'smtputf8',
  'dsn',
  ['auth', { allowInsecureAuth: true }],
  LOCAL,
] as const;

async function start(config?: TestServerOptions['config']): Promise<TestServer> {
  return scope.start({ plugins: [...EXTENSIONS], ...(config ? { config } : {}) });
}

/** A command line of exactly `octets` octets with its CRLF: `prefix` padded with `pad` to the length. */
function lineOf(octets: number, prefix: string, suffix = '', pad = 'x'): string {
  const line = `${prefix}${pad.repeat(octets - 2 - prefix.length - suffix.length)}${suffix}`;
  expect(Buffer.byteLength(`${line}\r\n`)).toBe(octets);
  return line;
}

function code(c: SmtpClient, line: string): Promise<string> {
  return c.command(line).then((r) => `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''}`);
}

describe('ESMTP parameters after HELO', () => {
  it('refuses every MAIL parameter with 555 after HELO, and takes them after EHLO', async () => {
    const t = await start();
    const c = await scope.connect(t);
    await c.expect('HELO client.example', 250);
    for (const param of ['SIZE=100', 'BODY=8BITMIME', 'SMTPUTF8', 'RET=HDRS', 'AUTH=<>']) {
      expect((await c.command(`MAIL FROM:<a@b.example> ${param}`)).code).toBe(555);
    }
    // Without parameters MAIL is fine after HELO.
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RSET', 250);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME', 250, '2.1.0');
  });

  it('refuses a RCPT parameter with 555 after HELO', async () => {
    const t = await start();
    const c = await scope.connect(t);
    await c.expect('HELO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    expect((await c.command('RCPT TO:<bob@example.com> NOTIFY=NEVER')).code).toBe(555);
    await c.expect('RCPT TO:<bob@example.com>', 250);
  });
});

describe('command lines end in CRLF', () => {
  it('refuses a command ending in a bare LF with 500 5.5.2 and does not run it', async () => {
    const t = await start();
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write('EHLO client.example\r\nMAIL FROM:<a@b.example>\nRCPT TO:<bob@example.com>\r\nNOOP\n');
    const text = await raw.replies(4, mark);
    const replies = splitReplies(text);
    expect(replies.slice(1).map((r) => r.slice(0, 9))).toEqual(['500 5.5.2', '503 5.5.1', '500 5.5.2']);
    raw.write('NOOP\r\n');
    expect(splitReplies(await raw.replies(5, mark))[4]).toBe('250 2.0.0 OK\r\n');
  });

  it('takes a bare LF as a line end with smtp.commandBareLineFeed: accept', async () => {
    const t = await start({ smtp: { commandBareLineFeed: 'accept' } });
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write('EHLO client.example\nMAIL FROM:<a@b.example>\nNOOP\n');
    const replies = splitReplies(await raw.replies(3, mark));
    expect(replies.slice(1)).toEqual(['250 2.1.0 Sender OK\r\n', '250 2.0.0 OK\r\n']);
  });
});

describe('command line length, per command', () => {
  it('holds commands of no extension to 512 octets although AUTH allows 12288 for its own lines', async () => {
    const t = await start();
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect(lineOf(512, 'NOOP '), 250, '2.0.0');
    await c.expect(lineOf(513, 'NOOP '), 500, '5.5.6');
    await c.expect(lineOf(1000, 'NOOP '), 500, '5.5.6');
    await c.expect(lineOf(600, 'HELO '), 500, '5.5.6');
    await c.expect(lineOf(600, 'MAIL FROM:<', '@b.example>'), 500, '5.5.6');
    // AUTH's own line may be long: it reaches the mechanism (nobody checks passwords here: 454).
    const auth = await code(c, lineOf(4000, 'AUTH PLAIN ', '', 'A'));
    expect(auth).not.toBe('500 5.5.6');
    await c.expect(lineOf(12289, 'AUTH PLAIN ', '', 'A'), 500, '5.5.6');
  });

  it('lets a MAIL or RCPT line grow by what the parameters it carries allow, and no more', async () => {
    const t = await start({ limits: { maxErrors: 50 } });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    // The path itself is limited to 256 octets (RFC 5321 4.5.3.1.3); pad with spaces before the parameters.
    const mail = (octets: number, params: string) =>
      lineOf(octets, 'MAIL FROM:<a@b.example>', ` ${params}`, ' ');
    // SIZE adds 26 octets (RFC 1870), SMTPUTF8 10 (RFC 6531).
    await c.expect(mail(512 + 26, 'SIZE=100'), 250, '2.1.0');
    await c.expect('RSET', 250);
    expect(await code(c, mail(512 + 27, 'SIZE=100'))).toBe('500 5.5.6');
    await c.expect(mail(512 + 36, 'SIZE=100 SMTPUTF8'), 250, '2.1.0');
    await c.expect('RSET', 250);
    // No parameter: no extra length.
    expect(await code(c, lineOf(513, 'MAIL FROM:<a@b.example>', '', ' '))).toBe('500 5.5.6');
    // AUTH= adds 500 (RFC 4954 section 5); only to MAIL.
    await c.expect(mail(1000, 'AUTH=<>'), 250, '2.1.0');
    // ORCPT adds its 500 characters and keyword to RCPT (RFC 3461), not to MAIL.
    const orcpt = `ORCPT=rfc822;${'o'.repeat(480)}@example.com`;
    const rcpt = lineOf(1000, 'RCPT TO:<bob@example.com>', ` ${orcpt}`, ' ');
    await c.expect(rcpt, 250, '2.1.5');
    const rcptLong = lineOf(1000, 'RCPT TO:<bob@example.com>', ' NOTIFY=NEVER', ' ');
    expect(await code(c, rcptLong)).toBe('500 5.5.6');
  });
});
