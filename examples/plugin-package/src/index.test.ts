import { startTestServer, type TestServer } from 'mailframe/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import stamp from './index.ts';

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

describe('mailframe-plugin-stamp', () => {
  it('adds its header field to an accepted message', async () => {
    t = await startTestServer({
      plugins: [
        [stamp, { value: 'relay-eu-1' }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@client.example>', 250);
    await c.expect('RCPT TO:<b@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: hi\r\n\r\nhello')).code).toBe(250);
    await c.close();
    const [message] = await t.waitForMessages(1);
    expect(message?.text).toMatch(/^X-Stamp: relay-eu-1\r$/m);
  });

  it('refuses a value with a line break (validated against its schema)', async () => {
    await expect(startTestServer({ plugins: [[stamp, { value: 'a\r\nBcc: x' }]] })).rejects.toThrow(
      /\/config\/value/,
    );
  });
});
