/**
 * Header limits over raw sockets: a header section over `limits.maxHeaderSize`
 * gets 552 5.3.4 and one header field over `limits.maxHeaderFieldLength` gets
 * 554 5.6.0, both only after the whole message was read (DATA and BDAT); a
 * message with small headers and a big body goes through.
 */
import { describe, expect, it } from 'vitest';
import type { TestServer } from '../../core/testkit.ts';
import { type RawSocket, splitReplies } from '../helpers/raw-socket.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

/** 200 KB of ordinary, short header fields: over the default 100 KiB section limit. */
const BIG_SECTION = 'X-Filler: 0123456789012345678901234567890123456789012345678901234567890123\r\n'.repeat(
  2700,
);
/** One field of 70,000 octets, folded into 70-octet lines: over the default 64 KiB field limit. */
const LONG_FIELD = `Subject: start\r\n${' 012345678901234567890123456789012345678901234567890123456789012345\r\n'.repeat(1000)}`;

/** Send `lines` (CRLF added), each answered with one reply; returns the replies. */
async function say(raw: RawSocket, ...lines: string[]): Promise<string[]> {
  const mark = raw.chunks.length;
  raw.write(lines.map((l) => `${l}\r\n`).join(''));
  return splitReplies(await raw.replies(lines.length, mark));
}

/** Connect, EHLO, MAIL and RCPT. */
async function open(t: TestServer): Promise<RawSocket> {
  const raw = await scope.raw(t);
  await raw.replies(1);
  const r = await say(raw, 'EHLO client.example', 'MAIL FROM:<a@b.example>', 'RCPT TO:<bob@example.com>');
  expect(r.map((x) => x.slice(0, 3))).toEqual(['250', '250', '250']);
  return raw;
}

/** DATA with `message` (dot-stuffing not needed for these), answered after the final dot. */
async function data(raw: RawSocket, message: string): Promise<string> {
  const [go] = await say(raw, 'DATA');
  expect(go?.slice(0, 3)).toBe('354');
  const mark = raw.chunks.length;
  // Written in pieces, as a client would, so the limits are met across chunks.
  for (let i = 0; i < message.length; i += 16384) raw.write(message.slice(i, i + 16384));
  raw.write('.\r\n');
  const [reply] = splitReplies(await raw.replies(1, mark));
  return reply as string;
}

/** The whole message as one BDAT LAST chunk; its one reply. */
async function bdatLast(raw: RawSocket, message: string): Promise<string> {
  const mark = raw.chunks.length;
  const bytes = Buffer.from(message, 'latin1');
  raw.write(`BDAT ${bytes.length} LAST\r\n`);
  for (let i = 0; i < bytes.length; i += 16384) raw.write(bytes.subarray(i, i + 16384));
  const [reply] = splitReplies(await raw.replies(1, mark));
  return reply as string;
}

describe('header limits', () => {
  it('refuses a 200 KB header section with 552 5.3.4 after the final dot, and the session goes on', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const raw = await open(t);
    expect(Buffer.byteLength(BIG_SECTION)).toBeGreaterThan(200_000);
    expect(await data(raw, `${BIG_SECTION}\r\nbody\r\n`)).toMatch(/^552 5\.3\.4 /);
    expect(t.queued).toHaveLength(0);
    // Read to its end: the next transaction works on the same connection.
    await say(raw, 'MAIL FROM:<a@b.example>', 'RCPT TO:<bob@example.com>');
    expect(await data(raw, 'Subject: small\r\n\r\nfine\r\n')).toMatch(/^250 /);
    expect(await t.waitForMessages(1)).toHaveLength(1);
  });

  it('refuses one header field over the limit with 554 5.6.0', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const raw = await open(t);
    expect(Buffer.byteLength(LONG_FIELD)).toBeGreaterThan(65536);
    expect(Buffer.byteLength(LONG_FIELD)).toBeLessThan(102400);
    expect(await data(raw, `From: a@b.example\r\n${LONG_FIELD}To: bob@example.com\r\n\r\nbody\r\n`)).toMatch(
      /^554 5\.6\.0 /,
    );
    expect(t.queued).toHaveLength(0);
  });

  it('refuses a single 10 MB header line (the reported case) with 554 5.6.0', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const raw = await open(t);
    const line = `X-Big: ${'a'.repeat(10 * 1024 * 1024)}\r\n`;
    expect(await data(raw, `${line}\r\nbody\r\n`)).toMatch(/^554 5\.6\.0 /);
    expect(t.queued).toHaveLength(0);
  });

  it('passes a message with ordinary headers and a big body', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const raw = await open(t);
    const body = `${'b'.repeat(998)}\r\n`.repeat(2000); // 2 MB of body lines
    expect(await data(raw, `Subject: big body\r\nTo: bob@example.com\r\n\r\n${body}`)).toMatch(/^250 /);
    const [m] = await t.waitForMessages(1);
    expect(m?.data.length).toBeGreaterThan(2_000_000);
  });

  it('honours configured limits', async () => {
    const t = await scope.start({
      plugins: [LOCAL],
      config: { limits: { maxHeaderSize: 4096, maxHeaderFieldLength: 1000 } },
    });
    const raw = await open(t);
    expect(await data(raw, `Subject: ${'s'.repeat(989)}\r\n\r\nfits\r\n`)).toMatch(/^250 /);
    await say(raw, 'MAIL FROM:<a@b.example>', 'RCPT TO:<bob@example.com>');
    expect(await data(raw, `Subject: ${'s'.repeat(990)}\r\n\r\none over\r\n`)).toMatch(/^554 5\.6\.0 /);
    await say(raw, 'MAIL FROM:<a@b.example>', 'RCPT TO:<bob@example.com>');
    expect(await data(raw, `${'X-A: b\r\n'.repeat(600)}\r\nbody\r\n`)).toMatch(/^552 5\.3\.4 /);
    expect(t.queued).toHaveLength(1);
  });

  it('applies to BDAT: 552 5.3.4 and 554 5.6.0 at LAST, after reading every chunk', async () => {
    const t = await scope.start({ plugins: ['chunking', LOCAL] });
    const raw = await open(t);
    // The header section split over two chunks.
    const half = BIG_SECTION.length / 2;
    const mark = raw.chunks.length;
    raw.write(`BDAT ${half}\r\n${BIG_SECTION.slice(0, half)}`);
    raw.write(`BDAT ${BIG_SECTION.length - half + 8} LAST\r\n${BIG_SECTION.slice(half)}\r\nbody\r\n`);
    const replies = splitReplies(await raw.replies(2, mark));
    expect(replies[0]).toMatch(/^250 /);
    expect(replies[1]).toMatch(/^552 5\.3\.4 /);
    await say(raw, 'MAIL FROM:<a@b.example>', 'RCPT TO:<bob@example.com>');
    expect(await bdatLast(raw, `${LONG_FIELD}\r\nbody\r\n`)).toMatch(/^554 5\.6\.0 /);
    await say(raw, 'MAIL FROM:<a@b.example>', 'RCPT TO:<bob@example.com>');
    expect(await bdatLast(raw, 'Subject: ok\r\n\r\nbody\r\n')).toMatch(/^250 /);
    expect(await t.waitForMessages(1)).toHaveLength(1);
  });
});
