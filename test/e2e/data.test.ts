/**
 * DATA (RFC 5321 4.1.1.4, 4.5.2): dot-unstuffing, byte-exact storage, large
 * messages, and the size limit (552 5.3.4 after the whole message).
 */
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestServer } from '../../core/testkit.ts';
import { afterReceived } from '../helpers/message.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

async function openData(t: TestServer): Promise<SmtpClient> {
  const c = await scope.connect(t);
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
  await c.expect('DATA', 354);
  return c;
}

/** Send raw DATA bytes (already stuffed, terminator included) and return the final reply. */
async function sendRaw(c: SmtpClient, raw: string | Buffer) {
  c.send(raw);
  return c.read();
}

describe('DATA', () => {
  it('removes dot-stuffing: "..line" is stored as ".line"', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await openData(t);
    const r = await sendRaw(c, 'Subject: dots\r\n\r\n..line\r\n...two\r\nmid.dle\r\n.\r\n');
    expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: dots\r\n\r\n.line\r\n..two\r\nmid.dle\r\n');
  });

  it('stores a line of only ".." as "."', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await openData(t);
    const r = await sendRaw(c, 'Subject: x\r\n\r\n..\r\nafter\r\n.\r\n');
    expect(r.code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: x\r\n\r\n.\r\nafter\r\n');
  });

  it('accepts an empty message', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await openData(t);
    const r = await sendRaw(c, '.\r\n');
    expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).length).toBe(0);
    expect(m?.text.startsWith('Received: from client.example ([127.0.0.1])')).toBe(true);
  });

  it('stores the message byte-exact after the Received header', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await openData(t);
    const body = Buffer.concat([
      Buffer.from('From: <a@b.example>\r\nTo: <bob@example.com>\r\nSubject: exact\r\n'),
      Buffer.from('Content-Type: application/octet-stream\r\n\r\n'),
      // Every octet value except CR and LF, then tabs, spaces and 8-bit text.
      Buffer.from(Array.from({ length: 256 }, (_, i) => i).filter((b) => b !== 13 && b !== 10)),
      Buffer.from('\r\n\tindented  \r\n   \r\ntrailing spaces   \r\n'),
      Buffer.from('Grüße, 日本語\r\n', 'utf8'),
      Buffer.from('\r\n\r\nlast\r\n'),
    ]);
    const r = await sendRaw(c, Buffer.concat([body, Buffer.from('.\r\n')]));
    expect(r.code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).equals(body)).toBe(true);
  });

  it('prepends a Received header naming the client, the server and the recipient', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await openData(t);
    await sendRaw(c, 'Subject: r\r\n\r\nx\r\n.\r\n');
    const [m] = await t.waitForMessages(1);
    expect(m?.text).toMatch(
      /^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test\.example \(mailframe\) with ESMTP id \S+\r\n\tfor <bob@example\.com>;\r\n\t\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\nSubject: r\r\n/,
    );
  });

  it('passes a 3 MB message through unchanged', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await openData(t);
    const lines: string[] = ['Subject: big', ''];
    let size = 0;
    for (let i = 0; size < 3 * 1024 * 1024; i++) {
      // Some lines start with a dot, to exercise unstuffing across chunk boundaries.
      const line = `${i % 7 === 0 ? '.' : ''}${i.toString(36).padStart(8, '0')} ${'abcdefghijklmnopqrstuvwxyz'.repeat(3)}`;
      lines.push(line);
      size += line.length + 2;
    }
    const body = `${lines.join('\r\n')}\r\n`;
    const stuffed = body.replace(/^\./gm, '..');
    const r = await sendRaw(c, `${stuffed}.\r\n`);
    expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
    const [m] = await t.waitForMessages(1);
    const stored = afterReceived(m!);
    expect(stored.length).toBe(Buffer.byteLength(body));
    expect(stored.equals(Buffer.from(body))).toBe(true);
  });

  it('refuses a message over limits.maxMessageSize with 552 5.3.4 after the whole message', async () => {
    const t = await scope.start({ plugins: [LOCAL], config: { limits: { maxMessageSize: 2048 } } });
    const c = await openData(t);
    const big = `Subject: big\r\n\r\n${'x'.repeat(76)}\r\n`.repeat(60); // about 5 KB
    // Nothing is answered before the terminator.
    c.send(big);
    c.send('more\r\n');
    const r = await sendRaw(c, '.\r\n');
    expect([r.code, r.enhanced]).toEqual([552, '5.3.4']);
    expect(c.pending).toBe('');
    expect(t.queued).toHaveLength(0);
    // The session continues; a message within the limit goes through.
    await c.expect('RCPT TO:<bob@example.com>', 503, '5.5.1');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    const ok = await sendRaw(c, 'Subject: small\r\n\r\nfine\r\n.\r\n');
    expect([ok.code, ok.enhanced]).toEqual([250, '2.0.0']);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: small\r\n\r\nfine\r\n');
  });

  it('accepts a message of exactly maxMessageSize octets', async () => {
    const t = await scope.start({ plugins: [LOCAL], config: { limits: { maxMessageSize: 2048 } } });
    const c = await openData(t);
    const head = 'Subject: edge\r\n\r\n';
    const body = `${head}${'y'.repeat(2048 - head.length - 2)}\r\n`;
    expect(Buffer.byteLength(body)).toBe(2048);
    const r = await sendRaw(c, `${body}.\r\n`);
    expect(r.code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe(body);
  });

  it('reads a message sent in many tiny writes', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await openData(t);
    const raw = 'Subject: tiny\r\n\r\n..dot\r\nline\r\n.\r\n';
    for (const ch of raw) c.send(ch);
    const r = await c.read();
    expect(r.code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: tiny\r\n\r\n.dot\r\nline\r\n');
  });

  it('does not end DATA on a dot line without CRLF before it', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await openData(t);
    c.send('Subject: x\r\n\r\nno end here.\r\n');
    const r = await sendRaw(c, 'still data .\r\n.\r\n');
    expect(r.code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: x\r\n\r\nno end here.\r\nstill data .\r\n');
  });
});
