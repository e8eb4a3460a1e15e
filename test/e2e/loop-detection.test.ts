/**
 * Loop detection (RFC 5321 6.3) over raw sockets: a message that arrives with
 * more `Received` header fields than `limits.maxReceivedHeaders` (default 100)
 * is refused with 554 5.4.6 after its data (DATA and BDAT LAST, and on an LMTP
 * listener for every recipient); one at the limit is accepted, and the
 * Received field this server prepends is not counted.
 */
import { describe, expect, it } from 'vitest';
import type { TestServer, TestServerOptions } from '../../core/testkit.ts';
import { type RawSocket, splitReplies } from '../helpers/raw-socket.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;
const LOOP = /^554 5\.4\.6 /;

/** `n` Received fields, as n earlier hops would have added them, then a Subject. */
function hops(n: number): string {
  let s = '';
  for (let i = n; i > 0; i--)
    s += `Received: from hop${i - 1}.example (hop${i - 1}.example [192.0.2.${i % 250}])\r\n\tby hop${i}.example with ESMTP id h${i}; Mon, 30 Nov 2026 10:00:00 +0000\r\n`;
  return `${s}Subject: looping\r\n`;
}

/** Send `lines` (CRLF added), one reply each; returns the replies. */
async function say(raw: RawSocket, ...lines: string[]): Promise<string[]> {
  const mark = raw.chunks.length;
  raw.write(lines.map((l) => `${l}\r\n`).join(''));
  return splitReplies(await raw.replies(lines.length, mark));
}

async function start(opts: TestServerOptions = {}): Promise<TestServer> {
  return scope.start({ ...opts, plugins: [LOCAL, ...(opts.plugins ?? [])] });
}

/** Connect, greet with `verb`, MAIL, and RCPT for each of `rcpts`. */
async function open(t: TestServer, verb = 'EHLO', rcpts = ['bob@example.com']): Promise<RawSocket> {
  const raw = await scope.raw(t);
  await raw.replies(1);
  await transaction(raw, verb, rcpts);
  return raw;
}

async function transaction(
  raw: RawSocket,
  verb: string | undefined,
  rcpts: readonly string[],
): Promise<void> {
  const lines = [
    ...(verb ? [`${verb} client.example`] : []),
    'MAIL FROM:<a@b.example>',
    ...rcpts.map((r) => `RCPT TO:<${r}>`),
  ];
  const r = await say(raw, ...lines);
  expect(r.map((x) => x.slice(0, 3))).toEqual(lines.map(() => '250'));
}

/** DATA with `message`, written in small pieces so fields straddle reads; the replies after the dot. */
async function data(raw: RawSocket, message: string, n = 1): Promise<string[]> {
  const [go] = await say(raw, 'DATA');
  expect(go?.slice(0, 3)).toBe('354');
  const mark = raw.chunks.length;
  const wire = `${message}.\r\n`;
  for (let i = 0; i < wire.length; i += 1000) raw.write(wire.slice(i, i + 1000));
  return splitReplies(await raw.replies(n, mark));
}

/** `message` in two BDAT chunks, cut in the middle of a field name; the replies to both. */
async function bdat(raw: RawSocket, message: string, n = 2): Promise<string[]> {
  const bytes = Buffer.from(message, 'latin1');
  const cut = bytes.indexOf('Received', bytes.length >> 1) + 4;
  const mark = raw.chunks.length;
  raw.write(Buffer.concat([Buffer.from(`BDAT ${cut}\r\n`), bytes.subarray(0, cut)]));
  raw.write(Buffer.concat([Buffer.from(`BDAT ${bytes.length - cut} LAST\r\n`), bytes.subarray(cut)]));
  return splitReplies(await raw.replies(n, mark));
}

const countReceived = (text: string): number =>
  (text.split('\r\n\r\n')[0]?.match(/^Received:/gm) ?? []).length;

describe('loop detection (limits.maxReceivedHeaders)', () => {
  it('refuses 101 Received fields with 554 5.4.6 and accepts 100, ours not counted', async () => {
    const t = await start();
    const raw = await open(t);
    const [refused] = await data(raw, `${hops(101)}\r\nbody\r\n`);
    expect(refused).toMatch(LOOP);
    expect(t.queued).toHaveLength(0);
    // The session goes on, and a message at the limit passes.
    await transaction(raw, undefined, ['bob@example.com']);
    const [accepted] = await data(raw, `${hops(100)}\r\nbody\r\n`);
    expect(accepted).toMatch(/^250 /);
    const [m] = await t.waitForMessages(1);
    expect(countReceived(m?.text ?? '')).toBe(101);
  });

  it('counts Received fields in any case and with white space before the colon, not look-alikes or the body', async () => {
    const t = await start({ config: { limits: { maxReceivedHeaders: 3 } } });
    const raw = await open(t);
    const three = 'Received: a\r\nRECEIVED: b\r\nreceived : c\r\nReceived-SPF: pass\r\nX-Received: d\r\n';
    const [ok] = await data(raw, `${three}\r\nReceived: in the body\r\n`);
    expect(ok).toMatch(/^250 /);
    await transaction(raw, undefined, ['bob@example.com']);
    const [refused] = await data(raw, `${three}ReCeIvEd: e\r\n\r\nbody\r\n`);
    expect(refused).toMatch(LOOP);
    expect(await t.waitForMessages(1)).toHaveLength(1);
  });

  it('applies to BDAT: 554 5.4.6 at LAST, with the header section split across chunks', async () => {
    const t = await start({ plugins: ['chunking'] });
    const raw = await open(t);
    const refused = await bdat(raw, `${hops(101)}\r\nbody\r\n`);
    expect(refused[0]).toMatch(/^250 /);
    expect(refused[1]).toMatch(LOOP);
    await transaction(raw, undefined, ['bob@example.com']);
    const accepted = await bdat(raw, `${hops(100)}\r\nbody\r\n`);
    expect(accepted.map((r) => r.slice(0, 3))).toEqual(['250', '250']);
    expect(await t.waitForMessages(1)).toHaveLength(1);
  });

  it('answers every recipient 554 5.4.6 on an LMTP listener (DATA and BDAT)', async () => {
    const t = await start({
      plugins: ['chunking'],
      config: { listeners: [{ name: 'lmtp', host: '127.0.0.1', port: 0, protocol: 'lmtp' }] },
    });
    const rcpts = ['bob@example.com', 'carol@example.com'];
    const raw = await open(t, 'LHLO', rcpts);
    const viaData = await data(raw, `${hops(101)}\r\nbody\r\n`, 2);
    expect(viaData).toHaveLength(2);
    for (const [i, r] of viaData.entries()) expect(r).toMatch(new RegExp(`^554 5\\.4\\.6 <${rcpts[i]}> `));
    await transaction(raw, undefined, rcpts);
    const viaBdat = await bdat(raw, `${hops(101)}\r\nbody\r\n`, 3);
    expect(viaBdat[0]).toMatch(/^250 /);
    for (const [i, r] of viaBdat.slice(1).entries())
      expect(r).toMatch(new RegExp(`^554 5\\.4\\.6 <${rcpts[i]}> `));
    expect(t.queued).toHaveLength(0);
  });
});
