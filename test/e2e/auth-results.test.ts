/**
 * The `auth-results` plugin: one Authentication-Results field (RFC 8601) with
 * the server's authserv-id, from the results checks recorded (here `spf`
 * against a loopback DNS zone, and a custom check).
 */
import { generateKeyPairSync } from 'node:crypto';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import Type from 'typebox';
import { afterEach, describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { startTestServer, type TestServer } from '../../core/testkit.ts';
import { authenticationResults } from '../../plugins/auth-results/format.ts';
import { dkimRecord } from '../../plugins/dkim-sign/keys.ts';
import { recordResult } from '../../plugins/policy/policy.ts';

declare module '../../plugins/policy/policy.ts' {
  interface PolicyChecks {
    iprev: import('../../plugins/policy/policy.ts').CheckResult;
  }
}

const iprev = definePlugin({
  name: 'fake-iprev',
  schema: Type.Object({}),
  register(api) {
    api.hooks.mail.tap((tx) => {
      recordResult(tx, 'iprev', {
        result: 'temperror',
        reason: 'PTR lookup "timed out"',
        properties: { 'policy.iprev': tx.session.remote.address },
      });
      return undefined;
    });
  },
});

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function deliver(from: string, helo = 'client.example'): Promise<string> {
  if (!t) throw new Error('no server');
  const c = await t.connect();
  await c.expect(`EHLO ${helo}`, 250);
  await c.expect(`MAIL FROM:<${from}>`, 250, '2.1.0');
  await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
  await c.expect('DATA', 354);
  expect((await c.sendData('Subject: hi\r\n\r\nhello\r\n')).code).toBe(250);
  await c.expect('QUIT', 221);
  const all = await t.waitForMessages(t.queued.length);
  return all[all.length - 1]?.text ?? '';
}

const zone = {
  'pass.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
  'fail.example': { TXT: ['v=spf1 -all'] },
};

describe('auth-results', () => {
  it('merges every recorded result into one field naming the server', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: ['spf', iprev, 'auth-results', ['rcpt-local', { domains: ['example.com'] }]],
    });
    const text = await deliver('alice@pass.example');
    expect(text.match(/^Authentication-Results:/gm)).toHaveLength(1);
    expect(text).toContain(
      'Authentication-Results: mx.test.example;\r\n' +
        '\tspf=pass reason="mx.test.example: domain of alice@pass.example designates 127.0.0.1 as permitted sender" smtp.mailfrom=alice@pass.example;\r\n' +
        '\tiprev=temperror reason="PTR lookup \\"timed out\\"" policy.iprev=127.0.0.1\r\n',
    );
  });

  it('uses the configured authserv-id, shows fail, and says none when nothing was checked', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: [
        'spf',
        ['auth-results', { authservId: 'auth.example' }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    expect(await deliver('alice@fail.example')).toMatch(
      /^Authentication-Results: auth\.example;\r\n\tspf=fail reason="[^"]*" smtp\.mailfrom=alice@fail\.example\r\n/m,
    );
    expect(authenticationResults('auth.example', [])).toBe('Authentication-Results: auth.example; none');
  });

  it('keeps UTF-8 in quoted values of an internationalized message (RFC 6532), ? in others', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: ['8bitmime', 'smtputf8', 'spf', 'auth-results', ['rcpt-local', { domains: ['example.com'] }]],
    });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<jöran@pass.example> SMTPUTF8', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: hi\r\n\r\nhello\r\n')).code).toBe(250);
    await c.expect('QUIT', 221);
    const [message] = await t.waitForMessages(1);
    expect(message?.text).toMatch(/\bspf=pass reason="[^"]*" smtp\.mailfrom="jöran@pass\.example"/);
    const utf8 = {
      check: 'spf',
      result: { result: 'pass' as const, properties: { 'smtp.mailfrom': 'jöran@pass.example' } },
    };
    expect(authenticationResults('a.example', [utf8], false)).toContain('smtp.mailfrom="j?ran@pass.example"');
  });

  it('includes the DKIM and DMARC results recorded after the data, above the Received field', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    t = await startTestServer({
      dns: {
        ...zone,
        's1._domainkey.pass.example': { TXT: [dkimRecord('ed25519', publicKey)] },
        '_dmarc.pass.example': { TXT: ['v=DMARC1; p=reject'] },
      },
      plugins: ['spf', 'dkim-verify', 'dmarc', 'auth-results', ['rcpt-local', { domains: ['example.com'] }]],
    });
    const body = 'From: alice@pass.example\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n';
    const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const data = {
      signingDomain: 'pass.example',
      selector: 's1',
      privateKey: key,
      algorithm: 'ed25519-sha256',
    };
    const signed = await dkimSign(body, { ...data, signatureData: [data] });
    expect(signed.errors).toEqual([]);
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@pass.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData(signed.signatures + body)).code).toBe(250);
    await c.expect('QUIT', 221);
    const [message] = await t.waitForMessages(1);
    const text = message?.text ?? '';
    expect(text.match(/^Authentication-Results:/gm)).toHaveLength(1);
    const field = /^Authentication-Results:.*(?:\r\n\t.*)*/m.exec(text)?.[0] ?? '';
    expect(field).toMatch(/\bspf=pass\b/);
    expect(field).toMatch(/\bdkim=pass\b[^;]*header\.d=pass\.example/);
    expect(field).toMatch(/\bdmarc=pass\b/);
    expect(text.indexOf('Authentication-Results:')).toBeLessThan(text.indexOf('Received:'));
  });

  it('removes arriving Authentication-Results that claim our authserv-id and keeps the others, byte for byte (RFC 8601 5)', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: ['spf', 'auth-results', ['rcpt-local', { domains: ['example.com'] }]],
    });
    const kept =
      'Authentication-Results: other.example;\r\n\tspf=pass smtp.mailfrom=alice@pass.example\r\n' +
      'From: alice@pass.example\r\n' +
      'Subject: hi\r\n';
    const forged = [
      'Authentication-Results: mx.test.example; dkim=pass header.d=pass.example\r\n',
      // Case, a comment before the id, a version after it, folding: still ours.
      'Authentication-Results: (forged) MX.Test.Example 1;\r\n\tdmarc=pass\r\n',
    ];
    const body = '\r\nhello\r\n';
    const sent = forged[0] + kept + forged[1] + body;
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@pass.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData(sent)).code).toBe(250);
    await c.expect('QUIT', 221);
    const [m] = await t.waitForMessages(1);
    const text = m?.text ?? '';
    // Ours on top, then Received, then the message as sent without the two forged fields.
    const ours = /^Authentication-Results: mx\.test\.example;(?:\r\n\t.*)*\r\n/.exec(text)?.[0];
    const received = /^Received: .*(?:\r\n\t.*)*\r\n/m.exec(text)?.[0];
    expect(ours).toMatch(/\tspf=pass /);
    expect(text).toBe(`${ours}${received}${kept}${body}`);
    expect(m?.data.length).toBe(Buffer.byteLength(text));
  });

  it('removes them from a message that spilled to disk, the body streamed untouched', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: ['spf', 'auth-results', ['rcpt-local', { domains: ['example.com'] }]],
    });
    const body = `\r\n${`${'z'.repeat(76)}\r\n`.repeat(8000)}`;
    const head = 'From: alice@pass.example\r\nSubject: big\r\n';
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@pass.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect(
      (await c.sendData(`Authentication-Results: mx.test.example; spf=pass\r\n${head}${body}`)).code,
    ).toBe(250);
    await c.expect('QUIT', 221);
    const [m] = await t.waitForMessages(1);
    const text = m?.text ?? '';
    expect(text.endsWith(head + body)).toBe(true);
    expect(text.split('Authentication-Results:')).toHaveLength(2);
  });
});
