/**
 * SMTP smuggling: only CR LF . CR LF ends DATA. Bare LF / bare CR around a dot
 * must never split one message into two transactions, whatever a lax peer
 * might make of them. Byte-exact, over raw sockets.
 */
import { describe, expect, it } from 'vitest';
import { afterReceived } from '../helpers/message.ts';
import { splitReplies } from '../helpers/raw-socket.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

const SMUGGLED =
  'MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n' +
  'From: <ceo@example.com>\r\nSubject: smuggled\r\n\r\nsend money\r\n';

const ENDINGS: ReadonlyArray<readonly [string, string]> = [
  ['LF . LF', '\n.\n'],
  ['CRLF . LF', '\r\n.\n'],
  ['LF . CRLF', '\n.\r\n'],
  ['CR . CR', '\r.\r'],
  ['CRLF . CR', '\r\n.\r'],
  ['CR . CRLF', '\r.\r\n'],
];

/** A server with rcpt-local and a testkit session in DATA (354 received) for alice@b.example to bob@example.com. */
async function inData() {
  const t = await scope.start({ plugins: [LOCAL] });
  const c = await scope.connect(t);
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<alice@b.example>', 250, '2.1.0');
  await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
  await c.expect('DATA', 354);
  return { t, c };
}

describe('SMTP smuggling', () => {
  for (const [name, fake] of ENDINGS) {
    it(`does not end DATA on ${name}`, async () => {
      const t = await scope.start({ plugins: [LOCAL] });
      const raw = await scope.raw(t);
      await raw.replies(1);
      const mark = raw.chunks.length;
      raw.write(
        'EHLO client.example\r\nMAIL FROM:<alice@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n',
      );
      await raw.replies(4, mark);
      const dataMark = raw.chunks.length;
      raw.write(`Subject: legit\r\n\r\nhello${fake}${SMUGGLED}.\r\nQUIT\r\n`);
      await raw.replies(2, dataMark);
      await raw.waitClosed();
      // Exactly one 250 for the message, then 221 for QUIT: no reply to a smuggled command.
      const replies = splitReplies(raw.since(dataMark));
      expect(replies.map((r) => r.slice(0, 9))).toEqual(['250 2.0.0', '221 2.0.0']);
      expect(t.queued).toHaveLength(1);
      const m = t.queued[0]!;
      expect(m.from).toBe('alice@b.example');
      expect(m.recipients).toEqual(['bob@example.com']);
      const stored = afterReceived(m).toString('latin1');
      expect(stored.startsWith('Subject: legit\r\n\r\nhello')).toBe(true);
      expect(stored).toContain('MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n');
      expect(stored.endsWith('send money\r\n')).toBe(true);
      // Stored line endings are all CR LF.
      expect(stored.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    });
  }

  it('does not end DATA on a dot split across writes with a bare LF', async () => {
    const { t, c } = await inData();
    c.send('Subject: split\r\n\r\nhello\r\n');
    c.send('.');
    c.send('\n');
    c.send(SMUGGLED);
    c.send('\r');
    c.send('\n.');
    c.send('\r');
    c.send('\n');
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
    await c.expect('QUIT', 221, '2.0.0');
    expect(t.queued).toHaveLength(1);
    expect(t.queued[0]?.text).toContain('MAIL FROM:<evil@x.example>');
  });

  it("normalizes bare LF to CRLF by default (smtp.bareLineEndings: 'normalize')", async () => {
    const { t, c } = await inData();
    c.send('Subject: lf\n\nline one\nline two\rline three\r\n.\r\n');
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: lf\r\n\r\nline one\r\nline two\r\nline three\r\n');
  });

  it("refuses data with bare line endings with 550 5.5.2 when smtp.bareLineEndings is 'reject'", async () => {
    const t = await scope.start({ plugins: [LOCAL], config: { smtp: { bareLineEndings: 'reject' } } });
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write('EHLO client.example\r\nMAIL FROM:<alice@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n');
    await raw.replies(4, mark);
    const dataMark = raw.chunks.length;
    raw.write(`Subject: legit\r\n\r\nhello\n.\n${SMUGGLED}.\r\nNOOP\r\n`);
    const text = await raw.replies(2, dataMark);
    expect(splitReplies(text).map((r) => r.slice(0, 9))).toEqual(['550 5.5.2', '250 2.0.0']);
    expect(t.queued).toHaveLength(0);
    // A clean message on the same connection is accepted.
    const next = raw.chunks.length;
    raw.write(
      'MAIL FROM:<alice@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: ok\r\n\r\nclean\r\n.\r\n',
    );
    const more = await raw.replies(4, next);
    expect(splitReplies(more).map((r) => r.slice(0, 3))).toEqual(['250', '250', '354', '250']);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: ok\r\n\r\nclean\r\n');
  });
});
