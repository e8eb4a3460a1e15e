import { definePlugin } from 'mailframe';
import { resultsOf } from 'mailframe/policy';
import { startTestServer, type TestDnsZone, type TestServer } from 'mailframe/testkit';
import Type from 'typebox';
import { afterEach, describe, expect, it } from 'vitest';
import senderMx from './index.ts';

const zone: TestDnsZone = {
  'good.example': { MX: [{ preference: 10, exchange: 'mx.good.example' }] },
  'nomx.example': { A: ['192.0.2.1'] },
  'broken.example': { rcode: 'SERVFAIL' },
};

/** Another plugin reading the check's results, typed, into a header. */
const showResults = definePlugin({
  name: 'show-results',
  schema: Type.Object({}),
  register(api) {
    api.hooks.headers.tap((fields, tx) => {
      const [r] = resultsOf(tx, 'sender-mx');
      return [...fields, `X-Sender-MX: ${r?.result ?? 'absent'} ${r?.properties?.['smtp.mailfrom'] ?? '-'}`];
    });
  },
});

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function send(from: string): Promise<string> {
  if (!t) throw new Error('no server');
  const c = await t.connect();
  await c.expect('EHLO client.example', 250);
  await c.expect(`MAIL FROM:<${from}>`, 250, '2.1.0');
  await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
  await c.expect('DATA', 354);
  expect((await c.sendData('Subject: hi\r\n\r\nhello\r\n')).code).toBe(250);
  await c.expect('QUIT', 221);
  const messages = await t.waitForMessages(t.queued.length);
  return messages[messages.length - 1]?.text ?? '';
}

describe('sender-mx example (the custom check of docs/policy.md)', () => {
  it('records pass or none and lets the mail through; other plugins read the result', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: [senderMx, showResults, ['rcpt-local', { domains: ['example.com'] }]],
    });
    expect(await send('alice@good.example')).toContain('X-Sender-MX: pass good.example\r\n');
    expect(await send('')).toContain('X-Sender-MX: none -\r\n');
  });

  it('rejects a sender domain without MX by default, and tempfails on a DNS failure when told to', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: [
        [senderMx, { actions: { fail: { action: 'reject' }, temperror: { action: 'tempfail' } } }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@nomx.example>', 550, '5.7.1');
    await c.expect('MAIL FROM:<alice@missing.example>', 550, '5.7.1');
    await c.expect('MAIL FROM:<alice@broken.example>', 451, '4.7.1');
    await c.expect('MAIL FROM:<alice@good.example>', 250, '2.1.0');
    await c.expect('QUIT', 221);
  });

  it('uses the configured reply, and quarantine marks the message instead of refusing it', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: [
        [
          senderMx,
          {
            actions: {
              fail: { action: 'quarantine' },
              temperror: { action: 'reject', code: 554, enhanced: '5.7.27', text: 'No mail from there' },
            },
          },
        ],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    const refused = await c.command('MAIL FROM:<alice@broken.example>');
    expect(refused.raw).toBe('554 5.7.27 No mail from there\r\n');
    await c.expect('QUIT', 221);
    await send('alice@nomx.example');
    expect(t.queued[0]?.attributes.quarantine).toEqual({ check: 'sender-mx', result: 'fail' });
  });
});
