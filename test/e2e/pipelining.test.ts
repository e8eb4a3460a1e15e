/**
 * PIPELINING (RFC 2920): a group of commands sent in one write is answered in
 * order, and the server batches the replies of a group into one write, so the
 * client sees them in one TCP read.
 */
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { afterReceived } from '../helpers/message.ts';
import type { RawSocket } from '../helpers/raw-socket.ts';
import { splitReplies } from '../helpers/raw-socket.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

/** Connect, read the greeting and do EHLO; returns the socket and the number of data events used. */
async function ready(raw: RawSocket): Promise<number> {
  await raw.replies(1);
  const before = raw.chunks.length;
  raw.write('EHLO client.example\r\n');
  await raw.replies(1, before);
  return raw.chunks.length;
}

describe('pipelining', () => {
  it('answers a whole pipelined transaction in order, in one TCP read', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const raw = await scope.raw(t);
    const mark = await ready(raw);
    raw.write(
      'MAIL FROM:<a@b.example>\r\n' +
        'RCPT TO:<one@example.com>\r\n' +
        'RCPT TO:<nobody@elsewhere.example>\r\n' +
        'RCPT TO:<two@example.com>\r\n' +
        'DATA\r\n',
    );
    const first = (await raw.chunk(mark)).toString('latin1');
    expect(splitReplies(first).map((r) => r.slice(0, 9))).toEqual([
      '250 2.1.0',
      '250 2.1.5',
      '550 5.7.1',
      '250 2.1.5',
      '354 End d',
    ]);
    expect(first.endsWith('\r\n')).toBe(true);

    // The message, its terminator and a pipelined RSET/NOOP in one write.
    const after = raw.chunks.length;
    raw.write('Subject: pipelined\r\n\r\nbody line\r\n.\r\nRSET\r\nNOOP\r\n');
    const second = (await raw.chunk(after)).toString('latin1');
    const replies = splitReplies(second);
    expect(replies).toHaveLength(3);
    expect(replies[0]).toMatch(/^250 2\.0\.0 Ok: queued as test-1\r\n$/);
    expect(replies[1]).toBe('250 2.0.0 Reset OK\r\n');
    expect(replies[2]).toBe('250 2.0.0 OK\r\n');

    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toEqual(['one@example.com', 'two@example.com']);
    expect(afterReceived(m!).toString()).toBe('Subject: pipelined\r\n\r\nbody line\r\n');
  });

  it('pipelines two whole transactions, messages included, in one write', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const raw = await scope.raw(t);
    const mark = await ready(raw);
    const tx = (n: number) =>
      `MAIL FROM:<s${n}@b.example>\r\nRCPT TO:<r${n}@example.com>\r\nDATA\r\nSubject: ${n}\r\n\r\nbody ${n}\r\n.\r\n`;
    raw.write(`${tx(1)}${tx(2)}QUIT\r\n`);
    const text = await raw.replies(9, mark);
    const codes = splitReplies(text).map((r) => r.slice(0, 3));
    expect(codes).toEqual(['250', '250', '354', '250', '250', '250', '354', '250', '221']);
    await raw.waitClosed();
    const msgs = await t.waitForMessages(2);
    expect(msgs.map((m) => m.from)).toEqual(['s1@b.example', 's2@b.example']);
    expect(msgs.map((m) => afterReceived(m).toString())).toEqual([
      'Subject: 1\r\n\r\nbody 1\r\n',
      'Subject: 2\r\n\r\nbody 2\r\n',
    ]);
  });

  it('keeps reply order when a refused DATA is followed by pipelined lines', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const raw = await scope.raw(t);
    const mark = await ready(raw);
    // No recipient is accepted, so DATA is refused and the "message" lines are commands.
    raw.write('MAIL FROM:<a@b.example>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\nNOOP\r\nRSET\r\n');
    const text = await raw.replies(5, mark);
    expect(splitReplies(text).map((r) => r.slice(0, 9))).toEqual([
      '250 2.1.0',
      '550 5.7.1',
      '554 5.5.1',
      '250 2.0.0',
      '250 2.0.0',
    ]);
    expect(t.queued).toHaveLength(0);
  });

  it('answers a group split across many small writes in order', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    const group = 'MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nNOOP\r\nRSET\r\n';
    for (const ch of group) c.send(ch);
    const replies = await c.readMany(4);
    expect(replies.map((r) => `${r.code} ${r.enhanced}`)).toEqual([
      '250 2.1.0',
      '250 2.1.5',
      '250 2.0.0',
      '250 2.0.0',
    ]);
  });
});

/**
 * A data hook that takes a while, so input piles up in the command buffer
 * (past the point where the server pauses reading) before data mode starts.
 */
const slowDataHook = definePlugin({
  name: 'slow-data-hook',
  schema: Type.Object({}),
  register(api) {
    api.hooks.data.tap(() => new Promise<undefined>((resolve) => setTimeout(resolve, 150, undefined)));
  },
});

/** A test verb on the core's chunked-message seam: `XCHUNK <size>` then exactly size octets. */
const chunkVerb = definePlugin({
  name: 'chunk-verb',
  schema: Type.Object({}),
  register(api) {
    api.registerVerb({
      name: 'XCHUNK',
      async handler(ctx) {
        const size = Number(ctx.argument);
        const refused = await ctx.chunks.begin();
        await ctx.chunks.read(size);
        return refused ?? ctx.chunks.finish();
      },
    });
  },
});

describe('input that piles up behind a slow hook', () => {
  it('reads a 200 KB body sent right behind DATA without stalling', async () => {
    const t = await scope.start({ plugins: [slowDataHook, LOCAL] });
    const raw = await scope.raw(t);
    const mark = await ready(raw);
    const body = `Subject: eager\r\n\r\n${`${'x'.repeat(998)}\r\n`.repeat(200)}`;
    // Not what RFC 2920 allows (the body should wait for 354), but it must not hang the session.
    raw.write(`MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n${body}.\r\nNOOP\r\n`);
    const text = await raw.replies(5, mark);
    expect(splitReplies(text).map((r) => r.slice(0, 3))).toEqual(['250', '250', '354', '250', '250']);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe(body);
  });

  it('reads a 200 KB chunk pipelined behind its command on the chunked-message seam', async () => {
    const t = await scope.start({ plugins: [slowDataHook, chunkVerb, LOCAL] });
    const raw = await scope.raw(t);
    const mark = await ready(raw);
    raw.write('MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\n');
    await raw.replies(2, mark);
    const next = raw.chunks.length;
    const chunk = Buffer.alloc(200_000, 'c');
    raw.write(Buffer.concat([Buffer.from(`XCHUNK ${chunk.length}\r\n`), chunk, Buffer.from('NOOP\r\n')]));
    const text = await raw.replies(2, next);
    expect(splitReplies(text).map((r) => r.slice(0, 9))).toEqual(['250 2.0.0', '250 2.0.0']);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).equals(chunk)).toBe(true);
  });
});
