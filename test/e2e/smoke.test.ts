import { describe, expect, it } from 'vitest';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

describe('smoke', () => {
  it('accepts a message for a local domain', async () => {
    const t = await scope.start({ plugins: [['rcpt-local', { domains: ['example.com'] }]] });
    const c = await t.connect();
    expect(c.greeting?.code).toBe(220);
    const ehlo = await c.expect('EHLO client.example', 250);
    expect(ehlo.lines).toContain('ENHANCEDSTATUSCODES');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('RCPT TO:<bob@elsewhere.example>', 550, '5.7.1');
    await c.expect('DATA', 354);
    const r = await c.sendData('Subject: hi\r\n\r\nhello\r\n.dot\r\n');
    expect(r.code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toEqual(['bob@example.com']);
    expect(m?.text).toMatch(/^Received: from client\.example/);
    expect(m?.text.endsWith('Subject: hi\r\n\r\nhello\r\n.dot\r\n')).toBe(true);
    await c.expect('QUIT', 221);
  });
});
