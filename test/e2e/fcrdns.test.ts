/**
 * `fcrdns`: forward-confirmed reverse DNS (iprev, RFC 8601 section 3) against
 * a loopback DNS zone, clients connecting from other 127.0.0.0/8 addresses.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../core/testkit.ts';
import type { TestDnsZone } from '../../core/testkit-dns.ts';
import type { FcrdnsResult } from '../../plugins/fcrdns/index.ts';
import { connectFrom, mailProbe, sendMessageFrom } from '../helpers/connection-checks.ts';

const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

const zone: TestDnsZone = {
  '10.0.0.127.in-addr.arpa': { PTR: ['other.example', 'good.example'] },
  'other.example': { A: ['192.0.2.7'] },
  'good.example': { A: ['192.0.2.8', '127.0.0.10'] },
  '11.0.0.127.in-addr.arpa': { PTR: ['liar.example', 'gone.example'] },
  'liar.example': { A: ['192.0.2.1'] },
  '13.0.0.127.in-addr.arpa': { rcode: 'SERVFAIL' },
  '14.0.0.127.in-addr.arpa': { PTR: ['silent.example'] },
  'silent.example': { drop: true },
  '15.0.0.127.in-addr.arpa': { PTR: ['a.example', 'b.example', 'c.example'] },
  'a.example': { A: ['192.0.2.1'] },
  'b.example': { A: ['192.0.2.2'] },
  'c.example': { A: ['127.0.0.15'] },
};

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function mailFrom(from: string) {
  if (!t) throw new Error('no server');
  const c = await connectFrom(t, from);
  await c.expect('EHLO client.example', 250);
  const r = await c.command('MAIL FROM:<alice@sender.example>');
  await c.close();
  return r;
}

describe('fcrdns', () => {
  it('records pass, fail, permerror and temperror, and only records by default', async () => {
    const seen: FcrdnsResult[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: [['fcrdns', { timeout: 1500 }], mailProbe('fcrdns', (r) => seen.push(...r)), LOCAL],
    });
    for (const from of ['127.0.0.10', '127.0.0.11', '127.0.0.12', '127.0.0.13', '127.0.0.14'])
      expect((await mailFrom(from)).code).toBe(250);
    expect(seen.map((r) => [r.result, r.name, r.properties])).toEqual([
      ['pass', 'good.example', { 'policy.iprev': '127.0.0.10' }],
      ['fail', undefined, { 'policy.iprev': '127.0.0.11' }],
      ['permerror', undefined, { 'policy.iprev': '127.0.0.12' }],
      ['temperror', undefined, { 'policy.iprev': '127.0.0.13' }],
      ['temperror', undefined, { 'policy.iprev': '127.0.0.14' }],
    ]);
    expect(seen[1]?.names).toEqual(['liar.example', 'gone.example']);
    expect(seen.every((r) => r.method === 'iprev')).toBe(true);
  });

  it('checks at most maxNames PTR names', async () => {
    const seen: FcrdnsResult[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: [['fcrdns', { maxNames: 2 }], mailProbe('fcrdns', (r) => seen.push(...r)), LOCAL],
    });
    await mailFrom('127.0.0.15');
    expect([seen[0]?.result, seen[0]?.names]).toEqual(['fail', ['a.example', 'b.example']]);
    expect(t.dns?.count('c.example')).toBe(0);
  });

  it('applies the action map (fail refused with 550 5.7.25, temperror deferred) and shows iprev in Authentication-Results', async () => {
    t = await startTestServer({
      dns: zone,
      // The resolver would wait 5 s, beyond the hook's 2 s: the 300 ms check timeout gives the temperror.
      config: { dns: { timeout: 5000, attempts: 1 } },
      plugins: [
        [
          'fcrdns',
          { timeout: 300, actions: { fail: { action: 'reject' }, temperror: { action: 'tempfail' } } },
        ],
        'auth-results',
        LOCAL,
      ],
    });
    const fail = await mailFrom('127.0.0.11');
    expect([fail.code, fail.enhanced]).toEqual([550, '5.7.25']);
    const temp = await mailFrom('127.0.0.14');
    expect([temp.code, temp.enhanced]).toEqual([451, '4.7.25']);
    await sendMessageFrom(t, '127.0.0.10');
    const [message] = await t.waitForMessages(1);
    expect(message?.text).toContain(
      'Authentication-Results: mx.test.example;\r\n\tiprev=pass reason="good.example" policy.iprev=127.0.0.10\r\n',
    );
  });
});
