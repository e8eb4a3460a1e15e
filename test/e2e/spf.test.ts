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

async function results(config: Record<string, unknown> = {}) {
  const seen: SpfResult[] = [];
  t = await startTestServer({ dns: zone, plugins: [['spf', config], collector(seen)] });
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
});
