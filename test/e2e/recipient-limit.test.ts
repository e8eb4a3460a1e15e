/**
 * Recipients past `limits.maxRecipients` (RFC 5321 4.5.3.1.10): each gets
 * 452 4.5.3, the transaction goes on with those accepted, and the client
 * sends the rest in another one. A client that pipelines past the limit must
 * not be disconnected for it; one that keeps going forever still is.
 */
import { describe, expect, it } from 'vitest';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

describe('recipients past limits.maxRecipients', () => {
  it('answers 110 pipelined RCPTs with 100 × 250 and 10 × 452 4.5.3, then delivers DATA to the 100', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    const rcpts = Array.from({ length: 110 }, (_, i) => `RCPT TO:<user${i}@example.com>\r\n`).join('');
    c.send(`MAIL FROM:<a@b.example>\r\n${rcpts}DATA\r\n`);
    const replies = await c.readMany(112);
    expect(replies[0]?.code).toBe(250);
    const answers = replies.slice(1, 111).map((r) => `${r.code} ${r.enhanced}`);
    expect(answers.slice(0, 100)).toEqual(Array(100).fill('250 2.1.5'));
    expect(answers.slice(100)).toEqual(Array(10).fill('452 4.5.3'));
    expect(replies[111]?.code).toBe(354);
    const done = await c.sendData('Subject: many\r\n\r\nhello\r\n');
    expect([done.code, done.enhanced]).toEqual([250, '2.0.0']);
    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toHaveLength(100);
    expect(m?.recipients[99]).toBe('user99@example.com');
    await c.expect('NOOP', 250, '2.0.0');
  });

  it('counts them as errors past limits.recipientOvershoot, so a client cannot loop forever', async () => {
    const t = await scope.start({
      plugins: [LOCAL],
      config: { limits: { maxRecipients: 2, recipientOvershoot: 4, maxErrors: 3 } },
    });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    for (let i = 0; i < 2; i++) await c.expect(`RCPT TO:<u${i}@example.com>`, 250, '2.1.5');
    // Four over the limit: not errors.
    for (let i = 0; i < 4; i++) await c.expect(`RCPT TO:<v${i}@example.com>`, 452, '4.5.3');
    // From the fifth on they count: the third error closes the session.
    await c.expect('RCPT TO:<w0@example.com>', 452, '4.5.3');
    await c.expect('RCPT TO:<w1@example.com>', 452, '4.5.3');
    await c.expect('RCPT TO:<w2@example.com>', 452, '4.5.3');
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([421, '4.7.0']);
    await c.waitClosed();
  });
});
