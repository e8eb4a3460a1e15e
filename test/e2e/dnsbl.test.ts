/**
 * `dnsbl` and `dnswl` against DNS lists served by a loopback test DNS server,
 * with clients connecting from other 127.0.0.0/8 addresses (and ::1 for
 * IPv6): listed and unlisted clients, Spamhaus-like return codes and refusal
 * codes, a list that answers for everything, a list that never answers, and
 * the allow list exempting a client from the block lists.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../core/testkit.ts';
import type { TestDnsZone } from '../../core/testkit-dns.ts';
import type { ListResult } from '../../plugins/dnsbl/lists.ts';
import {
  makeCertDir,
  makeCertificate,
  removeCertDir,
  type TestCertificate,
  upgradeClient,
} from '../helpers/certs.ts';
import {
  captureLog,
  connectFrom,
  mailProbe,
  manualClock,
  sendMessageFrom,
} from '../helpers/connection-checks.ts';

const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

/** `zone` lists 127.0.0.2 (RFC 5782 section 5) and `entries` (address to return codes). */
function list(zone: string, entries: Record<string, string[]>): TestDnsZone {
  const out: Record<string, { A: string[] }> = { [`2.0.0.127.${zone}`]: { A: ['127.0.0.2'] } };
  for (const [ip, codes] of Object.entries(entries))
    out[`${ip.split('.').reverse().join('.')}.${zone}`] = { A: codes };
  return out;
}

/** Spamhaus ZEN's return codes (https://www.spamhaus.org/faq/section/DNSBL%20Usage). */
const ZEN_CODES = {
  '127.0.0.2': 'SBL',
  '127.0.0.3': 'SBL CSS',
  '127.0.0.4': 'XBL',
  '127.0.0.9': 'DROP',
  '127.0.0.10': 'PBL ISP',
  '127.0.0.11': 'PBL Spamhaus',
};

const IPV6_LOOPBACK_NIBBLES = `1${'.0'.repeat(31)}`;

const zone: TestDnsZone = {
  ...list('bl.example', { '127.0.0.5': ['127.0.0.2'], '127.0.0.8': ['127.0.0.2'] }),
  ...list('zen.example', {
    '127.0.0.6': ['127.0.0.4', '127.0.0.10'],
    '127.0.0.7': ['127.255.255.254'],
    '127.0.0.9': ['127.0.0.99'],
  }),
  ...list('wl.example', { '127.0.0.8': ['127.0.10.3'] }),
  // list.dnswl.org answers 127.0.0.255 to resolvers it refuses (over the free-use limit).
  ...list('wl-refusing.example', { '127.0.0.5': ['127.0.0.255'] }),
  [`${IPV6_LOOPBACK_NIBBLES}.bl.example`]: { A: ['127.0.0.2'] },
  '*.all.example': { A: ['127.0.0.2'] },
  '*.slow.example': { drop: true },
};

let certDir = '';
let cert: TestCertificate;
beforeAll(async () => {
  certDir = await makeCertDir();
  cert = await makeCertificate(certDir, 'main', 'mx.test.example');
});
afterAll(async () => {
  if (certDir) await removeCertDir(certDir);
});

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function deliver(from: string, rcpt = 'bob@example.com') {
  if (!t) throw new Error('no server');
  const c = await connectFrom(t, from);
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<alice@sender.example>', 250);
  const r = await c.command(`RCPT TO:<${rcpt}>`);
  await c.close();
  return r;
}

describe('dnsbl', () => {
  it('refuses a listed client at RCPT naming the list, lets it reach postmaster, accepts an unlisted one', async () => {
    const seen: (readonly ListResult[])[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: [
        ['dnsbl', { zones: [{ zone: 'bl.example' }] }],
        mailProbe('dnsbl', (r) => seen.push(r)),
        LOCAL,
      ],
    });
    const c = await connectFrom(t, '127.0.0.5');
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@sender.example>', 250);
    const refused = await c.expect('RCPT TO:<bob@example.com>', 550, '5.7.1');
    expect(refused.lines[0]).toBe('Client host [127.0.0.5] blocked using bl.example');
    await c.expect('RCPT TO:<postmaster@example.com>', 250);
    await c.close();
    expect(seen[0]).toEqual([
      expect.objectContaining({
        result: 'fail',
        zone: 'bl.example',
        codes: ['127.0.0.2'],
        properties: { 'dns.zone': 'bl.example', 'policy.ip': '127.0.0.2' },
      }),
    ]);
    expect((await deliver('127.0.0.9')).code).toBe(250);
    expect(seen[1]).toEqual([expect.objectContaining({ result: 'none', zone: 'bl.example', codes: [] })]);
  });

  it('refuses at connect with a 554 greeting when `at` is connect', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: [['dnsbl', { zones: [{ zone: 'bl.example' }], at: 'connect' }], LOCAL],
    });
    const c = await connectFrom(t, '127.0.0.5');
    expect(c.greeting?.code).toBe(554);
    expect(c.greeting?.raw).toContain('blocked using bl.example');
    await c.expect('QUIT', 221);
    const ok = await connectFrom(t, '127.0.0.9');
    expect(ok.greeting?.code).toBe(220);
    await ok.close();
  });

  it('reads return codes through the zone’s map; a refusal code (127.255.255.x) is not a listing, and is logged', async () => {
    const seen: (readonly ListResult[])[] = [];
    const { lines, logger } = captureLog();
    t = await startTestServer({
      dns: zone,
      logger,
      plugins: [
        [
          'dnsbl',
          { zones: [{ zone: 'zen.example', codes: ZEN_CODES }], actions: { fail: { action: 'tag' } } },
        ],
        mailProbe('dnsbl', (r) => seen.push(r)),
        LOCAL,
      ],
    });
    expect((await deliver('127.0.0.6')).code).toBe(250); // tagged, not refused
    expect(seen[0]?.[0]).toMatchObject({
      result: 'fail',
      codes: ['127.0.0.4', '127.0.0.10'],
      meanings: ['XBL', 'PBL ISP'],
      reason: 'listed in zen.example (XBL, PBL ISP)',
    });
    expect((await deliver('127.0.0.7')).code).toBe(250);
    expect(seen[1]?.[0]).toMatchObject({
      result: 'none',
      reason: 'query refused by zen.example (127.255.255.254)',
    });
    expect(lines.some((l) => /refused the query/.test(l.msg) && l['zone'] === 'zen.example')).toBe(true);
    // Said once a minute, not once a connection.
    expect((await deliver('127.0.0.7')).code).toBe(250);
    expect(lines.filter((l) => /refused the query/.test(l.msg))).toHaveLength(1);
    // An answer the map does not know is no listing.
    expect((await deliver('127.0.0.9')).code).toBe(250);
    expect(seen[3]?.[0]).toMatchObject({ result: 'none', codes: [] });
  });

  it('ignores a zone that answers for everything (lists 127.0.0.1), with a log line, and uses the others', async () => {
    const seen: (readonly ListResult[])[] = [];
    const { lines, logger } = captureLog();
    t = await startTestServer({
      dns: zone,
      logger,
      plugins: [
        ['dnsbl', { zones: [{ zone: 'all.example' }, { zone: 'bl.example' }] }],
        mailProbe('dnsbl', (r) => seen.push(r)),
        LOCAL,
      ],
    });
    expect(lines.some((l) => /answers for everything/.test(l.msg) && l['zone'] === 'all.example')).toBe(true);
    expect((await deliver('127.0.0.9')).code).toBe(250);
    expect(seen[0]?.map((r) => r.zone)).toEqual(['bl.example']);
    expect((await deliver('127.0.0.5')).code).toBe(550);
  });

  it('probes again when due (injected clock): a zone that starts listing everything is then ignored', async () => {
    const clock = manualClock();
    const { lines, logger } = captureLog();
    t = await startTestServer({
      dns: { ...zone, ...list('turns.example', {}) },
      clock,
      logger,
      plugins: [['dnsbl', { zones: [{ zone: 'turns.example' }], probeInterval: 600 }], LOCAL],
    });
    expect((await deliver('127.0.0.9')).code).toBe(250);
    // The list is shut down and answers for everything: its entries go, a wildcard stands in.
    t.dns?.set('2.0.0.127.turns.example', undefined);
    t.dns?.set('*.turns.example', { A: ['127.0.0.2'] });
    // Before the probe is due the zone is used (and now lists the client).
    clock.advance(300_000);
    expect((await deliver('127.0.0.9')).code).toBe(550);
    expect(lines.some((l) => /answers for everything/.test(l.msg))).toBe(false);
    clock.advance(301_000);
    expect((await deliver('127.0.0.9')).code).toBe(250);
    expect(lines.some((l) => /answers for everything/.test(l.msg) && l['zone'] === 'turns.example')).toBe(
      true,
    );
  });

  it('gives up on a zone that does not answer in time; the other zone still counts; temperror has its action', async () => {
    const seen: (readonly ListResult[])[] = [];
    // The resolver would wait 5 s, beyond the hook's 2 s: only the check's own timeout answers in time.
    const slowDns = { dns: { timeout: 5000, attempts: 1 } };
    t = await startTestServer({
      dns: zone,
      config: slowDns,
      plugins: [
        ['dnsbl', { zones: [{ zone: 'slow.example' }, { zone: 'bl.example' }], timeout: 200 }],
        mailProbe('dnsbl', (r) => seen.push(r)),
        LOCAL,
      ],
    });
    expect((await deliver('127.0.0.5')).code).toBe(550);
    expect(seen[0]?.map((r) => [r.zone, r.result])).toEqual([
      ['slow.example', 'temperror'],
      ['bl.example', 'fail'],
    ]);
    await t.close();
    t = await startTestServer({
      dns: zone,
      config: slowDns,
      plugins: [
        [
          'dnsbl',
          { zones: [{ zone: 'slow.example' }], timeout: 200, actions: { temperror: { action: 'tempfail' } } },
        ],
        LOCAL,
      ],
    });
    const r = await deliver('127.0.0.9');
    expect([r.code, r.enhanced]).toEqual([451, '4.7.1']);
  });

  it('keeps its results across STARTTLS (fresh session notes, same client): recorded and refused after it', async () => {
    const seen: (readonly ListResult[])[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: [
        ['tls', { cert: cert.certPath, key: cert.keyPath, watch: false, reloadOnSighup: false }],
        ['dnsbl', { zones: [{ zone: 'bl.example' }] }],
        mailProbe('dnsbl', (r) => seen.push(r)),
        LOCAL,
      ],
    });
    const plain = await connectFrom(t, '127.0.0.5');
    await plain.expect('EHLO client.example', 250);
    await plain.expect('STARTTLS', 220);
    const { client } = await upgradeClient(plain, 'mx.test.example');
    await client.expect('EHLO client.example', 250);
    await client.expect('MAIL FROM:<alice@sender.example>', 250);
    await client.expect('RCPT TO:<bob@example.com>', 550, '5.7.1');
    await client.close();
    expect(seen[0]?.map((r) => r.result)).toEqual(['fail']);
    expect(t.dns?.count('5.0.0.127.bl.example')).toBe(1);
  });

  it('looks up an IPv6 client under its reversed nibbles (from ::1)', async () => {
    t = await startTestServer({
      dns: zone,
      config: { listeners: [{ name: 'smtp', host: '::1', port: 0 }] },
      plugins: [['dnsbl', { zones: [{ zone: 'bl.example' }] }], LOCAL],
    });
    const r = await deliver('::1');
    expect([r.code, r.lines[0]]).toEqual([550, 'Client host [::1] blocked using bl.example']);
  });
});

describe('dnswl', () => {
  it('records pass for a listed client (Authentication-Results dnswl), which dnsbl then does not refuse', async () => {
    const seen: (readonly ListResult[])[] = [];
    const allowed: (readonly ListResult[])[] = [];
    t = await startTestServer({
      dns: zone,
      plugins: [
        ['dnsbl', { zones: [{ zone: 'bl.example' }] }],
        ['dnswl', { zones: [{ zone: 'wl.example' }] }],
        'auth-results',
        mailProbe('dnsbl', (r) => seen.push(r)),
        mailProbe('dnswl', (r) => allowed.push(r)),
        LOCAL,
      ],
    });
    await sendMessageFrom(t, '127.0.0.8');
    expect(seen[0]?.[0]?.result).toBe('fail'); // listed, and recorded, but exempt
    const [message] = await t.waitForMessages(1);
    const field = /^Authentication-Results:.*(?:\r\n\t.*)*/m.exec(message?.text ?? '')?.[0];
    // dnsbl is no Authentication-Results method (IANA registry): only dnswl (RFC 8904) is shown.
    expect(field).toBe(
      'Authentication-Results: mx.test.example;\r\n\tdnswl=pass reason="listed in wl.example" dns.zone=wl.example policy.ip=127.0.10.3',
    );
    // A client on neither list: dnswl none, and the block list refuses as before.
    expect((await deliver('127.0.0.5')).code).toBe(550);
    expect(allowed.map((rs) => rs.map((r) => r.result))).toEqual([['pass'], ['none']]);
  });

  it('an allow-listed client is not quarantined by the block list either; others still are', async () => {
    t = await startTestServer({
      dns: zone,
      plugins: [
        ['dnsbl', { zones: [{ zone: 'bl.example' }], actions: { fail: { action: 'quarantine' } } }],
        ['dnswl', { zones: [{ zone: 'wl.example' }] }],
        LOCAL,
      ],
    });
    await sendMessageFrom(t, '127.0.0.8'); // on both lists
    await sendMessageFrom(t, '127.0.0.5'); // on the block list only
    const [allowed, blocked] = await t.waitForMessages(2);
    expect(allowed?.attributes.quarantine).toBeUndefined();
    expect(blocked?.attributes.quarantine).toEqual({ check: 'dnsbl', result: 'fail' });
  });

  it('an allow list refusing the query (127.0.0.255) lists nobody: the block list still refuses', async () => {
    const allowed: (readonly ListResult[])[] = [];
    const log = captureLog();
    t = await startTestServer({
      dns: zone,
      logger: log.logger,
      plugins: [
        ['dnsbl', { zones: [{ zone: 'bl.example' }] }],
        ['dnswl', { zones: [{ zone: 'wl-refusing.example' }] }],
        mailProbe('dnswl', (r) => allowed.push(r)),
        LOCAL,
      ],
    });
    const r = await deliver('127.0.0.5');
    expect([r.code, r.enhanced]).toEqual([550, '5.7.1']);
    expect(allowed[0]).toEqual([
      expect.objectContaining({ result: 'none', zone: 'wl-refusing.example', codes: [] }),
    ]);
    expect(
      log.lines.some((l) => /refused the query/.test(l.msg) && l['zone'] === 'wl-refusing.example'),
    ).toBe(true);
  });
});
