/**
 * The `dmarc` plugin against a loopback DNS zone: alignment of the From
 * domain with SPF (the `spf` plugin) and DKIM results (recorded here by a
 * stand-in check under the name `dkim`, as dkim-verify records them), strict
 * and relaxed, the domain's p/sp/pct, and every result it gives.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import Type from 'typebox';
import { afterEach, describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { startTestServer, type TestDnsZone, type TestServer } from '../../core/testkit.ts';
// The `dkim` check's result type (declared by dkim-verify on PolicyChecks).
import type {} from '../../plugins/dkim-verify/index.ts';
import { authorDomains, fromFields } from '../../plugins/dmarc/header-from.ts';
import type { DmarcResult } from '../../plugins/dmarc/index.ts';
import { recordResult } from '../../plugins/policy/policy.ts';
import { resultsProbe } from '../helpers/test-plugins.ts';

const spfOk = { TXT: ['v=spf1 ip4:127.0.0.1 -all'] };
const spfFail = { TXT: ['v=spf1 -all'] };
const zone: TestDnsZone = {
  '_dmarc.example.org': { TXT: ['v=DMARC1; p=reject; adkim=s; aspf=s'] },
  'bounce.example.org': spfOk,
  '_dmarc.relaxed.example': { TXT: ['v=DMARC1; p=reject'] },
  'bounce.relaxed.example': spfOk,
  '_dmarc.reject.example': { TXT: ['v=DMARC1; p=reject'] },
  'reject.example': spfFail,
  '_dmarc.sample.example': { TXT: ['v=DMARC1; p=reject; pct=0'] },
  'sample.example': spfFail,
  '_dmarc.half.example': { TXT: ['v=DMARC1; p=reject; pct=50'] },
  'half.example': spfFail,
  '_dmarc.quar.example': { TXT: ['v=DMARC1; p=quarantine'] },
  'quar.example': spfFail,
  '_dmarc.parent.example': { TXT: ['v=DMARC1; p=reject; sp=none'] },
  'sub.parent.example': spfFail,
  'nodmarc.example': spfOk,
  '_dmarc.broken.example': { rcode: 'SERVFAIL' },
  'broken.example': spfOk,
};

/** Stands in for dkim-verify: records a DKIM pass for the configured signing domain. */
const fakeDkim = definePlugin({
  name: 'fake-dkim',
  schema: Type.Object({ d: Type.String() }),
  register(api, config) {
    api.hooks.message.tap((tx) => {
      recordResult(tx, 'dkim', { result: 'pass', properties: { 'header.d': config.d, 'header.s': 'sel' } });
      return undefined;
    });
  },
});

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function start(extra: unknown[] = []) {
  const seen: DmarcResult[] = [];
  t = await startTestServer({
    dns: zone,
    plugins: [
      'spf',
      ...(extra as []),
      'dmarc',
      resultsProbe('dmarc', (results) => seen.push(...results)),
      ['rcpt-local', { domains: ['example.com'] }],
    ],
  });
  return seen;
}

/** Send a message whose header section starts with `head` (its From field or fields); the reply to the end of data. */
async function sendHead(mailFrom: string, head: string): Promise<{ code: number; raw: string }> {
  if (!t) throw new Error('no server');
  const c = await t.connect();
  await c.expect('EHLO client.example', 250);
  await c.expect(`MAIL FROM:<${mailFrom}>`, 250);
  await c.expect('RCPT TO:<bob@example.com>', 250);
  await c.expect('DATA', 354);
  const r = await c.sendData(`${head}Subject: hi\r\n\r\nhello\r\n`);
  await c.expect('QUIT', 221);
  return r;
}

/** Send a message from one author; the reply to the end of data. */
function send(mailFrom: string, from: string): Promise<{ code: number; raw: string }> {
  return sendHead(mailFrom, `From: Someone <${from}>\r\n`);
}

describe('dmarc', () => {
  it('strict alignment: DKIM d=mail.example.org, MAIL FROM @bounce.example.org, From example.org gives fail', async () => {
    await start([[fakeDkim, { d: 'mail.example.org' }]]);
    const r = await send('ret@bounce.example.org', 'ceo@example.org');
    // p=reject: refused at the end of data.
    expect(r.raw).toMatch(/^550 5\.7\.26 /);
  });

  it('records fail under strict alignment and pass when DKIM signs the From domain itself', async () => {
    const seen = await start([[fakeDkim, { d: 'example.org' }]]);
    expect((await send('ret@bounce.example.org', 'ceo@example.org')).code).toBe(250);
    expect(seen.pop()).toMatchObject({
      result: 'pass',
      domain: 'example.org',
      alignment: { dkim: 'example.org' },
    });
  });

  it('relaxed alignment: SPF of a subdomain aligns with the organisational domain', async () => {
    const seen = await start();
    expect((await send('ret@bounce.relaxed.example', 'a@relaxed.example')).code).toBe(250);
    expect(seen.pop()).toMatchObject({
      result: 'pass',
      policy: 'reject',
      alignment: { spf: 'bounce.relaxed.example' },
      properties: { 'header.from': 'relaxed.example', 'policy.dmarc': 'reject' },
    });
  });

  it('applies p, sp and pct to a fail; none without a record; temperror on SERVFAIL', async () => {
    const seen = await start();
    expect((await send('a@reject.example', 'a@reject.example')).raw).toMatch(/^550 5\.7\.26 /);

    expect((await send('a@sample.example', 'a@sample.example')).code).toBe(250);
    expect(seen.pop()).toMatchObject({ result: 'fail', policy: 'reject', pct: 0, applied: 'quarantine' });
    expect(t?.queued.at(-1)?.attributes.quarantine).toEqual({ check: 'dmarc', result: 'fail' });

    expect((await send('a@quar.example', 'a@quar.example')).code).toBe(250);
    expect(seen.pop()).toMatchObject({ result: 'fail', applied: 'quarantine' });

    expect((await send('a@sub.parent.example', 'a@sub.parent.example')).code).toBe(250);
    expect(seen.pop()).toMatchObject({ result: 'fail', policy: 'none', applied: 'none' });
    expect(t?.queued.at(-1)?.attributes.quarantine).toBeUndefined();

    expect((await send('a@nodmarc.example', 'a@nodmarc.example')).code).toBe(250);
    expect(seen.pop()?.result).toBe('none');

    expect((await send('a@broken.example', 'a@broken.example')).code).toBe(250);
    expect(seen.pop()?.result).toBe('temperror');
  });

  it('samples pct with the server’s random source: inside the sample the policy, outside the next milder one', async () => {
    // Draws 0.49 (inside pct=50), then 0.5 (outside), then 0.1 (inside).
    const draws = [0.49, 0.5, 0.1];
    const seen: DmarcResult[] = [];
    t = await startTestServer({
      dns: zone,
      random: () => draws.shift() ?? 0.99,
      plugins: [
        'spf',
        'dmarc',
        resultsProbe('dmarc', (results) => seen.push(...results)),
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    expect((await send('a@half.example', 'a@half.example')).raw).toMatch(/^550 5\.7\.26 /);
    expect((await send('a@half.example', 'a@half.example')).code).toBe(250);
    expect(seen.at(-1)).toMatchObject({ result: 'fail', pct: 50, applied: 'quarantine' });
    expect((await send('a@half.example', 'a@half.example')).raw).toMatch(/^550 5\.7\.26 /);
    // Refused messages never reach the probe (it taps after dmarc): only the sampled-out one is seen.
    expect(seen.map((r) => r.applied)).toEqual(['quarantine']);
    expect(draws).toEqual([]);
  });

  it('reuses an evaluation for the same author and authenticated domains for cacheTtl (the resolver caching nothing)', async () => {
    const run = async (cacheTtl: number) => {
      const seen: DmarcResult[] = [];
      t = await startTestServer({
        dns: zone,
        config: { dns: { cacheSize: 0 } },
        plugins: [
          'spf',
          ['dmarc', { cacheTtl }],
          resultsProbe('dmarc', (results) => seen.push(...results)),
          ['rcpt-local', { domains: ['example.com'] }],
        ],
      });
      for (let i = 0; i < 3; i++) await send('ret@bounce.relaxed.example', 'a@relaxed.example');
      // Another author domain is another evaluation.
      await send('a@quar.example', 'a@quar.example');
      const queries = t.dns?.count('_dmarc.relaxed.example', 'TXT');
      await t.close();
      t = undefined;
      expect(seen.map((r) => r.result)).toEqual(['pass', 'pass', 'pass', 'fail']);
      return queries;
    };
    expect(await run(60)).toBe(1);
    expect(await run(0)).toBe(3);
  });

  it('records aggregate-report data per day, author domain, source IP, disposition and aligned results', async () => {
    const day = Date.UTC(2026, 11, 4, 12);
    t = await startTestServer({
      dns: zone,
      clock: { now: () => day },
      plugins: ['spf', 'dmarc', ['rcpt-local', { domains: ['example.com'] }]],
    });
    for (let i = 0; i < 2; i++) await send('ret@bounce.relaxed.example', 'a@relaxed.example');
    await send('a@reject.example', 'a@reject.example');
    await send('a@quar.example', 'a@quar.example');
    await send('a@nodmarc.example', 'a@nodmarc.example'); // no record: nobody to report to
    // Shutdown writes what was counted.
    await t.server.close(200);
    const saved = JSON.parse(await readFile(join(t.server.dataDir, 'dmarc', '2026-12-04.json'), 'utf8'));
    expect(saved).toEqual({
      day: '2026-12-04',
      rows: [
        {
          headerFrom: 'relaxed.example',
          sourceIp: '127.0.0.1',
          disposition: 'none',
          dkim: 'fail',
          spf: 'pass',
          policy: 'reject',
          count: 2,
        },
        {
          headerFrom: 'reject.example',
          sourceIp: '127.0.0.1',
          disposition: 'reject',
          dkim: 'fail',
          spf: 'fail',
          policy: 'reject',
          count: 1,
        },
        {
          headerFrom: 'quar.example',
          sourceIp: '127.0.0.1',
          disposition: 'quarantine',
          dkim: 'fail',
          spf: 'fail',
          policy: 'quarantine',
          count: 1,
        },
      ],
    });
  });

  it('lets the action map override the published policy', async () => {
    const seen: DmarcResult[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: [
        'spf',
        ['dmarc', { actions: { fail: { action: 'tag' }, temperror: { action: 'tempfail' } } }],
        resultsProbe('dmarc', (results) => seen.push(...results)),
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    expect((await send('a@reject.example', 'a@reject.example')).code).toBe(250);
    expect(seen.pop()?.result).toBe('fail');
    expect((await send('a@broken.example', 'a@broken.example')).raw).toMatch(/^451 4\.7\.26 /);
  });

  it('checks every author domain of a From mixing <a@b> and bare a@b mailboxes: one failing with p=reject refuses the message', async () => {
    const seen = await start();
    // SPF aligns with relaxed.example only; the second author is reject.example (p=reject).
    const mixed = 'From: <a@relaxed.example>, ceo@reject.example\r\n';
    expect((await sendHead('ret@bounce.relaxed.example', mixed)).raw).toMatch(/^550 5\.7\.26 /);
    // The results, with the policy not enforced (a refused message never reaches the probe).
    await t?.close();
    t = await startTestServer({
      dns: zone,
      plugins: [
        'spf',
        ['dmarc', { honorPolicy: false }],
        resultsProbe('dmarc', (results) => seen.push(...results)),
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    expect((await sendHead('ret@bounce.relaxed.example', mixed)).code).toBe(250);
    expect(seen.splice(0)).toMatchObject([
      { result: 'pass', domain: 'relaxed.example' },
      { result: 'fail', domain: 'reject.example', policy: 'reject', applied: 'reject' },
    ]);
    expect(authorDomains('Boss <a@X.example>, b@y.example (c@z.example)')).toEqual([
      'x.example',
      'y.example',
    ]);
  });

  it('reads the author domain of `Name <local@domain>` as of any other From value', () => {
    // The common shape, read without regular expressions, and its near misses, read the general way.
    const cases: [string, string[]][] = [
      ['Alice <alice@Example.ORG>', ['example.org']],
      ['Alice <alice@example.org.>', ['example.org']],
      [' <a@b.example> \t', ['b.example']],
      ['<a@b@c.example>', ['b@c.example']],
      ['A <a@.>', []],
      ['A <a@>', []],
      ['A <a@b c.example>', ['b']],
      ['A <a@b.example>x', ['b.example']],
      ['x@y.example <a@b.example>', ['b.example', 'y.example']],
      ['"Q" <a@b.example>', ['b.example']],
      ['Group: A <a@b.example>;', ['b.example']],
      ['A <a@b.example><c@d.example>', ['b.example', 'd.example']],
      ['A, B <a@b.example>', ['b.example']],
      ['A <a@b.example\u00a0>', ['b.example']],
    ];
    for (const [value, domains] of cases) expect([value, authorDomains(value)]).toEqual([value, domains]);
  });

  it('applies the strictest policy among the author domains that fail, across several From fields too', async () => {
    const seen = await start();
    // quar.example (p=quarantine) fails, relaxed.example passes: quarantined, not refused.
    let r = await sendHead('ret@bounce.relaxed.example', 'From: a@quar.example, b@relaxed.example\r\n');
    expect(r.code).toBe(250);
    expect(t?.queued.at(-1)?.attributes.quarantine).toEqual({ check: 'dmarc', result: 'fail' });
    expect(seen.splice(0).map((x) => [x.domain, x.result, x.applied])).toEqual([
      ['quar.example', 'fail', 'quarantine'],
      ['relaxed.example', 'pass', undefined],
    ]);
    // Two From fields (RFC 5322 allows one): quarantine and reject both fail, reject wins.
    r = await sendHead('ret@bounce.relaxed.example', 'From: a@quar.example\r\nFrom: b@reject.example\r\n');
    expect(r.raw).toMatch(/^550 5\.7\.26 /);
    // Two From fields naming one domain that passes: one evaluation, pass.
    r = await sendHead(
      'ret@bounce.relaxed.example',
      'From: a@relaxed.example\r\nFrom: b@relaxed.example\r\n',
    );
    expect(r.code).toBe(250);
    expect(seen.splice(0).map((x) => [x.domain, x.result])).toEqual([['relaxed.example', 'pass']]);
  });

  it('gives one permerror past maxAuthorDomains, and none for several authors with multipleAuthors "none"', async () => {
    const seen: DmarcResult[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: [
        'spf',
        ['dmarc', { maxAuthorDomains: 2, actions: { permerror: { action: 'tag' } } }],
        resultsProbe('dmarc', (results) => seen.push(...results)),
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const three = 'From: a@relaxed.example, b@nodmarc.example, c@reject.example\r\n';
    expect((await sendHead('ret@bounce.relaxed.example', three)).code).toBe(250);
    expect(seen.splice(0)).toMatchObject([
      { result: 'permerror', domain: 'relaxed.example,nodmarc.example,reject.example' },
    ]);
    await t.close();

    t = await startTestServer({
      dns: zone,
      plugins: [
        'spf',
        ['dmarc', { multipleAuthors: 'none' }],
        resultsProbe('dmarc', (results) => seen.push(...results)),
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const r = await sendHead(
      'ret@bounce.relaxed.example',
      'From: <a@relaxed.example>, ceo@reject.example\r\n',
    );
    expect(r.code).toBe(250);
    expect(seen.splice(0)).toMatchObject([{ result: 'none', domain: 'relaxed.example,reject.example' }]);
  });

  it('reads a From field with a long run of octets without "@" in linear time (no regex backtracking)', () => {
    // Quadratic before: 150 kB took over half a minute of event-loop time, past the test timeout.
    const value = `${'x'.repeat(150_000)} a@relaxed.example`;
    expect(authorDomains(value)).toEqual(['relaxed.example']);
    expect(authorDomains(`Group:${'y'.repeat(150_000)}, b@Relaxed.example;`)).toEqual(['relaxed.example']);
  });

  it('finds the author domains of From fields', () => {
    const header =
      'Received: x\r\nFrom: "Doe, J" <j@Example.ORG> (work)\r\nTo: b@c\r\nfrom:\r\n x@y.example\r\n';
    const fields = fromFields(header);
    expect(fields).toHaveLength(2);
    expect(fields.flatMap(authorDomains)).toEqual(['example.org', 'y.example']);
  });
});
