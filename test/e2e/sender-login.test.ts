/**
 * `sender-login`: an authenticated session may use as MAIL FROM only what its
 * login owns; over real SMTP sessions (the login set by a test plugin at EHLO,
 * as the `auth` plugin would after AUTH).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../core/testkit.ts';
import { loggedInAs } from '../helpers/test-plugins.ts';

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** MAIL FROM `sender` in a fresh session; the reply. */
async function mailFrom(sender: string) {
  if (!t) throw new Error('no server');
  const c = await t.connect();
  await c.expect('EHLO client.example', 250);
  const r = await c.command(`MAIL FROM:<${sender}>`);
  await c.close();
  return r;
}

describe('sender-login', () => {
  it('lets a login use the address it is, and refuses another with 553 5.7.1', async () => {
    t = await startTestServer({
      plugins: [loggedInAs('Alice@Example.org'), 'sender-login'],
    });
    expect((await mailFrom('alice@example.org')).code).toBe(250);
    expect((await mailFrom('ALICE@EXAMPLE.ORG')).code).toBe(250);
    const other = await mailFrom('bob@example.org');
    expect([other.code, other.enhanced, other.lines[0]]).toEqual([
      553,
      '5.7.1',
      'Sender address not owned by the authenticated user',
    ]);
    expect((await mailFrom('alice@example.net')).code).toBe(553);
    expect((await mailFrom('')).code).toBe(250);
  });

  it('lets a login use the addresses and domains listed for it, and no other', async () => {
    t = await startTestServer({
      plugins: [
        loggedInAs('alice'),
        [
          'sender-login',
          { owners: { alice: ['alice@example.org', '@lists.example.org'] }, nullSender: false },
        ],
      ],
    });
    expect((await mailFrom('alice@example.org')).code).toBe(250);
    expect((await mailFrom('news@lists.example.org')).code).toBe(250);
    expect((await mailFrom('carol@example.org')).code).toBe(553);
    expect((await mailFrom('x@sub.lists.example.org')).code).toBe(553);
    expect((await mailFrom('')).code).toBe(553);
  });

  it('leaves unauthenticated sessions alone', async () => {
    t = await startTestServer({ plugins: [['sender-login', { owners: { alice: ['@example.org'] } }]] });
    expect((await mailFrom('bob@example.org')).code).toBe(250);
  });

  it('refuses a configuration entry that is not an address or @domain', async () => {
    await expect(
      startTestServer({ plugins: [['sender-login', { owners: { alice: ['example.org'] } }]] }),
    ).rejects.toThrow('owners: "example.org" (for "alice") is not an address or @domain');
  });
});
