/**
 * `sender-login`: an authenticated session may use as MAIL FROM only what its
 * login owns; over real SMTP sessions (the login set by a test plugin at EHLO,
 * as the `auth` plugin would after AUTH).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../core/testkit.ts';
import { authorMailboxes } from '../../plugins/dmarc/header-from.ts';
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

/** A whole transaction from `sender` with `head` as the message's header section; the final reply. */
async function send(sender: string, head: string) {
  if (!t) throw new Error('no server');
  const c = await t.connect();
  await c.expect('EHLO client.example', 250);
  await c.expect(`MAIL FROM:<${sender}>`, 250);
  await c.expect('RCPT TO:<rcpt@example.com>', 250);
  await c.expect('DATA', 354);
  const r = await c.sendData(`${head}Subject: test\r\n\r\nHello.\r\n`);
  await c.close();
  return r;
}

const recipients = ['rcpt-local', { domains: ['example.com'] }] as const;

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

  it('holds the From header to the login too: every author must be owned (550 5.7.1 at the end of DATA)', async () => {
    t = await startTestServer({
      plugins: [
        loggedInAs('alice'),
        ['sender-login', { owners: { alice: ['alice@example.org', '@lists.example.org'] } }],
        recipients,
      ],
    });
    // The envelope is hers; the author is somebody else (dkim-sign would sign for From's domain).
    const forged = await send('alice@example.org', 'From: The Boss <boss@example.net>\r\n');
    expect([forged.code, forged.enhanced, forged.lines[0]]).toEqual([
      550,
      '5.7.1',
      'From header address not owned by the authenticated user',
    ]);
    // One author of two is not hers; so is one of two From fields.
    expect((await send('alice@example.org', 'From: alice@example.org, boss@example.net\r\n')).code).toBe(550);
    expect(
      (await send('alice@example.org', 'From: alice@example.org\r\nFrom: boss@example.net\r\n')).code,
    ).toBe(550);
    // A display name, a comment, case, a needlessly quoted local part, a folded field, a domain she owns.
    for (const from of [
      'From: "Smith, Alice" <ALICE@Example.org>\r\n',
      'From: alice@example.org (Alice)\r\n',
      'From: "alice"@example.org\r\n',
      'From: Alice\r\n <alice@example.org>\r\n',
      'From: News <news@lists.example.org>, alice@example.org\r\n',
      'Subject-less: x\r\n',
    ])
      expect([from, (await send('alice@example.org', from)).code]).toEqual([from, 250]);
    // Quoted text that looks like an address is a display name, not an author.
    expect((await send('alice@example.org', 'From: "boss@example.net" <alice@example.org>\r\n')).code).toBe(
      250,
    );
    expect((await send('alice@example.org', 'From: "boss"@example.net\r\n')).code).toBe(550);
    expect(t.queued).toHaveLength(7);
  });

  it('reads UTF-8 From addresses of an internationalized message as the text they are', async () => {
    t = await startTestServer({
      plugins: [
        loggedInAs('alice'),
        ['sender-login', { owners: { alice: ['alice@example.org', 'jöran@example.org'] } }],
        recipients,
      ],
    });
    expect((await send('alice@example.org', 'From: Jöran <jöran@example.org>\r\n')).code).toBe(250);
    expect((await send('alice@example.org', 'From: Jöran <jörg@example.org>\r\n')).code).toBe(550);
  });

  it('leaves the From header alone with fromHeader false, and for unauthenticated sessions', async () => {
    t = await startTestServer({
      plugins: [loggedInAs('alice@example.org'), ['sender-login', { fromHeader: false }], recipients],
    });
    expect((await send('alice@example.org', 'From: boss@example.net\r\n')).code).toBe(250);
    await t.close();
    t = await startTestServer({ plugins: ['sender-login', recipients] });
    expect((await send('bob@example.org', 'From: boss@example.net\r\n')).code).toBe(250);
  });

  it('finds every author of a From value: mailbox lists, groups, comments, quoted strings, routes', () => {
    expect(authorMailboxes('a@x.example')).toEqual(['a@x.example']);
    expect(authorMailboxes(' "Doe, J." <j@x.example> , b@y.example (c@z.example)')).toEqual([
      'j@x.example',
      'b@y.example',
    ]);
    expect(authorMailboxes('Team: a@x.example, B <b@y.example>;')).toEqual(['a@x.example', 'b@y.example']);
    expect(authorMailboxes('undisclosed-recipients:;')).toEqual([]);
    expect(authorMailboxes('"j doe"@x.example')).toEqual(['"j doe"@x.example']);
    expect(authorMailboxes('<@relay.example:a@x.example>')).toEqual(['a@x.example']);
    expect(authorMailboxes('A (a comment (nested) <not@this.example>) <a@x.example>')).toEqual([
      'a@x.example',
    ]);
    expect(authorMailboxes('"quoted <q@x.example>" <a@x.example>')).toEqual(['a@x.example']);
  });
});
