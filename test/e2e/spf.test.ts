/**
 * The `spf` plugin against a real authoritative DNS server on loopback (the
 * test kit's): every result value, include:, redirect=, macros, the lookup
 * limits, the HELO identity of the null sender, and early refusal through the
 * action map.
 */
import Type from 'typebox';
import { afterEach, describe, expect, it } from 'vitest';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { startTestServer, type TestDnsZone, type TestServer } from '../../core/testkit.ts';
import { resultsOf } from '../../plugins/policy/policy.ts';
import type { SpfResult } from '../../plugins/spf/index.ts';
import { resultsProbe } from '../helpers/test-plugins.ts';

const tooMany = Array.from({ length: 11 }, (_, i) => `a:h${i}.many.example`).join(' ');
const manyHosts = Object.fromEntries(
  Array.from({ length: 11 }, (_, i) => [`h${i}.many.example`, { A: [`192.0.2.${i + 1}`] }]),
);

const zone: TestDnsZone = {
  'pass.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
  'fail.example': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
  'soft.example': { TXT: ['v=spf1 ip4:192.0.2.1 ~all'] },
  'neutral.example': { TXT: ['v=spf1 ?all'] },
  'nospf.example': { A: ['192.0.2.1'], TXT: ['google-site-verification=abc'] },
  'syntax.example': { TXT: ['v=spf1 ip4:not-an-address -all'] },
  // A syntax error after the term that matches: RFC 7208 4.6 validates the whole record first.
  'late-syntax.example': { TXT: ['v=spf1 ip4:127.0.0.1 ip4:999.1.1.1 -all'] },
  'many.example': { TXT: [`v=spf1 ${tooMany} -all`] },
  ...manyHosts,
  'void.example': { TXT: ['v=spf1 a:v1.void.example a:v2.void.example a:v3.void.example -all'] },
  'broken.example': { rcode: 'SERVFAIL' },
  'inc.example': { TXT: ['v=spf1 include:_spf.provider.example -all'] },
  'redir.example': { TXT: ['v=spf1 redirect=_spf.provider.example'] },
  '_spf.provider.example': { TXT: ['v=spf1 ip4:127.0.0.0/8 -all'] },
  'macro.example': { TXT: ['v=spf1 exists:%{l}.%{ir}._spf.macro.example -all'] },
  'alice.1.0.0.127._spf.macro.example': { A: ['127.0.0.2'] },
  'helo.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
  'badhelo.example': { TXT: ['v=spf1 -all'] },
};

/** Collects what `spf` recorded, from a later `mail` tap. */
function collector(seen: SpfResult[]) {
  return definePlugin({
    name: 'collect-spf',
    schema: Type.Object({}),
    register(api) {
      api.hooks.mail.tap(
        (tx) => {
          seen.push(...resultsOf(tx, 'spf'));
          return undefined;
        },
        { stage: Stage.LATE },
      );
    },
  });
}

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** A server whose SPF results a `mail` tap collects: the check waits at MAIL FROM (`waitAtMail`). */
async function results(config: Record<string, unknown> = {}) {
  const seen: SpfResult[] = [];
  t = await startTestServer({
    dns: zone,
    plugins: [['spf', { waitAtMail: true, ...config }], collector(seen)],
  });
  return seen;
}

describe('spf', () => {
  it('gives each result value for the MAIL FROM domain', async () => {
    const seen = await results();
    const c = await t!.connect();
    await c.expect('EHLO client.example', 250);
    const cases: [string, string][] = [
      ['pass.example', 'pass'],
      ['fail.example', 'fail'],
      ['soft.example', 'softfail'],
      ['neutral.example', 'neutral'],
      ['nospf.example', 'none'],
      ['missing.example', 'none'],
      ['syntax.example', 'permerror'],
      ['late-syntax.example', 'permerror'],
      ['many.example', 'permerror'],
      ['void.example', 'permerror'],
      ['broken.example', 'temperror'],
      ['inc.example', 'pass'],
      ['redir.example', 'pass'],
    ];
    for (const [domain, want] of cases) {
      await c.expect(`MAIL FROM:<alice@${domain}>`, 250, '2.1.0');
      await c.expect('RSET', 250);
      const got = seen.pop();
      expect({ domain, result: got?.result }).toEqual({ domain, result: want });
      expect(got).toMatchObject({
        identity: 'mailfrom',
        domain,
        properties: { 'smtp.mailfrom': `alice@${domain}` },
      });
    }
    await c.expect('QUIT', 221);
  });

  it('with strict: false, evaluates a record lazily: a syntax error past the matching term is ignored', async () => {
    const seen = await results({ strict: false });
    const c = await t!.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@late-syntax.example>', 250);
    expect(seen.pop()?.result).toBe('pass');
    await c.expect('QUIT', 221);
  });

  it('expands macros with the sender and the client address', async () => {
    const seen = await results();
    const c = await t!.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@macro.example>', 250);
    expect(seen.pop()?.result).toBe('pass');
    await c.expect('RSET', 250);
    await c.expect('MAIL FROM:<bob@macro.example>', 250);
    expect(seen.pop()?.result).toBe('fail');
    await c.expect('QUIT', 221);
  });

  it('checks the HELO identity for the null sender', async () => {
    const seen = await results();
    const c = await t!.connect();
    await c.expect('EHLO helo.example', 250);
    await c.expect('MAIL FROM:<>', 250);
    expect(seen.pop()).toMatchObject({
      result: 'pass',
      identity: 'helo',
      domain: 'helo.example',
      properties: { 'smtp.helo': 'helo.example' },
    });
    await c.expect('RSET', 250);
    await c.expect('EHLO badhelo.example', 250);
    await c.expect('MAIL FROM:<>', 250);
    expect(seen.pop()).toMatchObject({ result: 'fail', identity: 'helo' });
    await c.expect('EHLO [127.0.0.1]', 250);
    await c.expect('MAIL FROM:<>', 250);
    expect(seen.pop()).toMatchObject({ result: 'none', identity: 'helo' });
    await c.expect('QUIT', 221);
  });

  it('refuses early through the action map: fail 550 5.7.23, temperror 451 4.7.24, configured text', async () => {
    await results({
      actions: {
        fail: { action: 'reject' },
        temperror: { action: 'tempfail' },
        permerror: { action: 'reject', text: 'Fix your SPF record' },
      },
    });
    const c = await t!.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@fail.example>', 550, '5.7.23');
    await c.expect('MAIL FROM:<alice@broken.example>', 451, '4.7.24');
    expect((await c.command('MAIL FROM:<alice@syntax.example>')).raw).toBe(
      '550 5.7.24 Fix your SPF record\r\n',
    );
    // softfail is not listed: accepted.
    await c.expect('MAIL FROM:<alice@soft.example>', 250, '2.1.0');
    await c.expect('QUIT', 221);
  });

  it('refuses an action map whose reply code does not match its action', async () => {
    await expect(
      startTestServer({
        dns: zone,
        plugins: [['spf', { actions: { fail: { action: 'reject', code: 451 } } }]],
      }),
    ).rejects.toThrow(/reject needs a 5xx code/);
  });

  it('by default does not hold the MAIL FROM reply: the check runs meanwhile and is recorded at the message', async () => {
    const atMail: SpfResult[] = [];
    const atMessage: SpfResult[] = [];
    t = await startTestServer({
      dns: {
        ...zone,
        // Never answered: a check that held the MAIL FROM reply would hold it for `timeout`.
        'silent.example': { drop: true },
      },
      config: { dns: { timeout: 60_000, attempts: 1 } },
      plugins: [
        // quarantine refuses nothing: the check still does not hold MAIL FROM, and is acted on at the message.
        ['spf', { timeout: 120_000, actions: { fail: { action: 'quarantine' } } }],
        collector(atMail),
        resultsProbe('spf', (r) => atMessage.push(...r)),
        ['rcpt-local', { domains: ['example.net'] }],
      ],
    });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@silent.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.net>', 250);
    // The reply came while the lookup is still unanswered.
    expect(t.dns?.count('silent.example', 'TXT')).toBe(1);
    expect(atMail).toEqual([]);
    await c.expect('RSET', 250);
    // A check that finishes: recorded once the message is in, for DMARC and Authentication-Results.
    await c.expect('MAIL FROM:<alice@fail.example>', 250);
    expect(atMail).toEqual([]);
    await c.expect('RCPT TO:<bob@example.net>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\nhi\r\n')).code).toBe(250);
    expect(atMessage).toMatchObject([{ result: 'fail', domain: 'fail.example' }]);
    const [m] = await t.waitForMessages(1);
    expect(m?.attributes.quarantine).toEqual({ check: 'spf', result: 'fail' });
    await c.close();
  });

  it('reuses a result for the same client, sender and HELO for cacheTtl (the resolver caching nothing)', async () => {
    const run = async (cacheTtl: number) => {
      const seen: SpfResult[] = [];
      t = await startTestServer({
        dns: { 'cached.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'], ttl: 300 } },
        config: { dns: { cacheSize: 0 } },
        plugins: [['spf', { waitAtMail: true, cacheTtl }], collector(seen)],
      });
      const c = await t.connect();
      await c.expect('EHLO client.example', 250);
      for (let i = 0; i < 3; i++) {
        await c.expect('MAIL FROM:<alice@cached.example>', 250);
        await c.expect('RSET', 250);
      }
      // Another sender of the same domain is another evaluation (macros may read the local part).
      await c.expect('MAIL FROM:<bob@cached.example>', 250);
      await c.expect('QUIT', 221);
      const queries = t.dns?.count('cached.example', 'TXT');
      await t.close();
      t = undefined;
      expect(seen.map((r) => r.result)).toEqual(['pass', 'pass', 'pass', 'pass']);
      return queries;
    };
    expect(await run(60)).toBe(2);
    expect(await run(0)).toBe(4);
  });
});
