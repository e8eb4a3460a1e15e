import { startTestServer, type TestServer } from 'mailframe/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import heloFqdn, { isFqdn } from './index.ts';

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

describe('helo-fqdn', () => {
  it('knows a fully-qualified domain when it sees one', () => {
    expect(isFqdn('mail.example.com')).toBe(true);
    expect(isFqdn('mail.example.com.')).toBe(true);
    expect(isFqdn('localhost')).toBe(false);
    expect(isFqdn('192.0.2.1')).toBe(false);
    expect(isFqdn('-bad-.example')).toBe(false);
  });

  it('with action "reject", refuses MAIL after a bare host name', async () => {
    t = await startTestServer({
      plugins: [
        [heloFqdn, { action: 'reject' }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const c = await t.connect();
    await c.expect('EHLO localhost', 250);
    await c.expect('MAIL FROM:<alice@example.org>', 550, '5.7.1');
    await c.expect('EHLO mail.example.org', 250);
    await c.expect('MAIL FROM:<alice@example.org>', 250, '2.1.0');
    await c.expect('QUIT', 221);
  });

  it('with the default action, tags the message instead', async () => {
    t = await startTestServer({ plugins: [heloFqdn, ['rcpt-local', { domains: ['example.com'] }]] });
    for (const name of ['localhost', '[127.0.0.1]']) {
      const c = await t.connect();
      await c.expect(`EHLO ${name}`, 250);
      await c.expect('MAIL FROM:<alice@example.org>', 250);
      await c.expect('RCPT TO:<bob@example.com>', 250);
      await c.expect('DATA', 354);
      expect((await c.sendData('Subject: hi\r\n\r\nhello\r\n')).code).toBe(250);
      await c.expect('QUIT', 221);
    }
    const [first, second] = await t.waitForMessages(2);
    expect(first?.text).toMatch(/^Received: [\s\S]*\r\nX-HELO-Check: fail\r\nSubject: hi\r\n/);
    expect(second?.text).toContain('\r\nX-HELO-Check: pass\r\n');
  });

  it('refuses an unknown action at start-up', async () => {
    await expect(startTestServer({ plugins: [[heloFqdn, { action: 'drop' }]] })).rejects.toMatchObject({
      code: 'MF_CONFIG_INVALID',
    });
  });
});
