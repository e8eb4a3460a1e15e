/**
 * `helo-checks`: each test of the EHLO name recorded as its own result, with
 * its own action map; the client connects from 127.0.0.20 (the server
 * listens on 127.0.0.1, which is "our address").
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../core/testkit.ts';
import type { HeloResult } from '../../plugins/helo-checks/index.ts';
import { connectFrom, mailProbe } from '../helpers/connection-checks.ts';
import { loggedInAs } from '../helpers/test-plugins.ts';

const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;
const CLIENT = '127.0.0.20';

const zone = {
  'good.example': { A: ['192.0.2.1'] },
  'mx-only.example': { MX: [{ preference: 10, exchange: 'good.example' }] },
  'broken.example': { rcode: 'SERVFAIL' as const },
};

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** EHLO `name` from the client address, then MAIL FROM; the two replies. */
async function greet(name: string, from = CLIENT) {
  if (!t) throw new Error('no server');
  const c = await connectFrom(t, from);
  const ehlo = await c.command(`EHLO ${name}`);
  const mail = ehlo.code === 250 ? await c.command('MAIL FROM:<alice@sender.example>') : undefined;
  await c.close();
  return { ehlo, mail };
}

const summary = (rs: readonly HeloResult[]) => Object.fromEntries(rs.map((r) => [r.test, r.result]));

describe('helo-checks', () => {
  it('records each test’s result; by default only a forged name (ours, or our address) is refused, at MAIL', async () => {
    const seen: (readonly HeloResult[])[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: ['helo-checks', mailProbe('helo', (r) => seen.push(r)), LOCAL],
    });
    const cases: [string, number, Record<string, string>][] = [
      ['good.example', 250, { fqdn: 'pass', bareIp: 'pass', forged: 'pass', resolves: 'pass' }],
      ['mx-only.example', 250, { fqdn: 'pass', bareIp: 'pass', forged: 'pass', resolves: 'pass' }],
      ['nowhere.example', 250, { fqdn: 'pass', bareIp: 'pass', forged: 'pass', resolves: 'fail' }],
      ['broken.example', 250, { fqdn: 'pass', bareIp: 'pass', forged: 'pass', resolves: 'temperror' }],
      ['localhostname', 250, { fqdn: 'fail', bareIp: 'pass', forged: 'pass' }],
      ['127.0.0.20', 250, { fqdn: 'fail', bareIp: 'fail', forged: 'pass' }],
      ['[127.0.0.20]', 250, { literal: 'pass', forged: 'pass' }],
      ['[127.0.0.21]', 250, { literal: 'fail', forged: 'pass' }],
      ['[IPv6:::1]', 250, { literal: 'fail', forged: 'pass' }],
    ];
    for (const [name, code, results] of cases) {
      const before = seen.length;
      const { mail } = await greet(name);
      expect([name, mail?.code]).toEqual([name, code]);
      expect([name, summary(seen[before] ?? [])]).toEqual([name, results]);
    }
    for (const forged of ['mx.test.example', 'MX.Test.Example.', '[127.0.0.1]', '127.0.0.1']) {
      const { ehlo, mail } = await greet(forged);
      expect([forged, ehlo.code, mail?.code, mail?.enhanced]).toEqual([forged, 250, 550, '5.7.1']);
      expect(mail?.lines[0]).toBe('Bad HELO/EHLO name (forged)');
    }
    // This host itself (client address = server address) is not forging.
    expect((await greet('mx.test.example', '127.0.0.1')).mail?.code).toBe(250);
  });

  it('applies each test’s action map, at EHLO when asked', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: [
        [
          'helo-checks',
          {
            at: 'ehlo',
            ownNames: ['mail.example.com'],
            actions: {
              fqdn: { fail: { action: 'reject' } },
              resolves: { temperror: { action: 'tempfail' } },
            },
          },
        ],
        LOCAL,
      ],
    });
    const nonFqdn = await greet('localhostname');
    // No enhanced code: EHLO has not been answered yet, so the session has not turned them on (RFC 2034).
    expect([nonFqdn.ehlo.code, nonFqdn.ehlo.lines[0]]).toEqual([550, 'Bad HELO/EHLO name (fqdn)']);
    // The operator's map replaced the defaults of that test only: forged still refuses.
    expect((await greet('mail.example.com')).ehlo.code).toBe(550);
    expect((await greet('broken.example')).ehlo.code).toBe(451);
    expect((await greet('nowhere.example')).ehlo.code).toBe(250);
  });

  it('leaves authenticated sessions alone by default', async () => {
    const seen: (readonly HeloResult[])[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: [loggedInAs('alice'), 'helo-checks', mailProbe('helo', (r) => seen.push(r)), LOCAL],
    });
    expect((await greet('mx.test.example')).mail?.code).toBe(250);
    expect(seen).toEqual([[]]);
  });
});
