/** A real client: nodemailer talks to the server over loopback. */
import nodemailer from 'nodemailer';
import { describe, expect, it } from 'vitest';
import { afterReceived } from '../helpers/message.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

describe('nodemailer as the client', () => {
  it('delivers a multi-recipient message with an attachment', async () => {
    const t = await scope.start({ plugins: [['rcpt-local', { domains: ['example.com', 'example.org'] }]] });
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: t.port,
      secure: false,
      ignoreTLS: true,
      name: 'client.example',
    });
    scope.defer(() => transport.close());
    const attachment = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 256));
    const info = await transport.sendMail({
      envelope: { from: 'bounces@sender.example', to: ['alice@example.com', 'bob@example.org'] },
      from: 'Sender <news@sender.example>',
      to: 'Alice <alice@example.com>',
      cc: 'bob@example.org',
      subject: 'Report with attachment',
      text: 'Hello,\n.\nA line with only a dot above.\n',
      attachments: [{ filename: 'data.bin', content: attachment, contentType: 'application/octet-stream' }],
    });
    expect(info.accepted).toEqual(['alice@example.com', 'bob@example.org']);
    expect(info.rejected).toEqual([]);
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as test-1/);

    const [m] = await t.waitForMessages(1);
    expect(m?.from).toBe('bounces@sender.example');
    expect(m?.recipients).toEqual(['alice@example.com', 'bob@example.org']);
    expect(m?.text).toMatch(/^Received: from client\.example \(\[127\.0\.0\.1\]\)/);
    const body = afterReceived(m!).toString('latin1');
    expect(body).toContain('Subject: Report with attachment\r\n');
    expect(body).toContain('From: Sender <news@sender.example>\r\n');
    expect(body).toMatch(/Content-Disposition: attachment;\s+filename=data\.bin/);
    // The dot-only line survived stuffing and unstuffing.
    expect(body).toContain('Hello,\r\n.\r\nA line with only a dot above.');
    // The attachment decodes back to the same bytes.
    const part = /filename=data\.bin\r\n\r\n([A-Za-z0-9+/=\r\n]+?)\r\n--/.exec(body);
    expect(part).not.toBeNull();
    expect(Buffer.from(part![1]!.replace(/\r\n/g, ''), 'base64').equals(attachment)).toBe(true);
  });

  it('reports refused recipients and delivers to the rest', async () => {
    const t = await scope.start({ plugins: [['rcpt-local', { domains: ['example.com'] }]] });
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: t.port,
      secure: false,
      ignoreTLS: true,
    });
    scope.defer(() => transport.close());
    const info = await transport.sendMail({
      from: 'a@sender.example',
      to: ['ok@example.com', 'relay@elsewhere.example'],
      subject: 'partial',
      text: 'x',
    });
    expect(info.accepted).toEqual(['ok@example.com']);
    expect(info.rejected).toEqual(['relay@elsewhere.example']);
    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toEqual(['ok@example.com']);
  });
});
