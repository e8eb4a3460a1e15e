/**
 * Outbound transport security in deliver-mx, over loopback only: MTA-STS
 * (RFC 8461) with a policy host on 127.0.0.1 (HTTPS, test CA), DANE (RFC 7672)
 * with TLSA records from the tests' DNS server (which sets the AD bit per
 * name; the server trusts it with `dns.trustAd`), REQUIRETLS (RFC 8689) and
 * `TLS-Required: No`. "Remote" mail exchangers are smtp-server instances on
 * 127.0.0.2-4 presenting certificates made here: issued by the test CA for
 * the MX name, expired, for another name, self-signed. Every session is
 * checked against the `tlsReport` events a test sink collects.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runQueueCli } from '../../bin/queue-cli.ts';
import type { TestDnsServer } from '../../core/testkit-dns.ts';
import type { DeliveryReport } from '../../core/types.ts';
import type { TlsSessionEvent } from '../../plugins/outbound/tls-report.ts';
import type { QueueService } from '../../plugins/queue/types.ts';
import {
  issueCertificate,
  makeCertificate,
  makeTestCa,
  type TestCa,
  type TestCertificate,
} from '../helpers/certs.ts';
import {
  type DeliveryServer,
  deliverJob,
  deliveryJob,
  type PeerOptions,
  startDeliveryServer,
} from './deliver-helpers.ts';
import { freePort, type Remote, startDns, startRemote, type Zone } from './mx-helpers.ts';
import { type PolicyServer, startPolicyServer, stsPolicy, tlsa, tlsReportSink } from './sts-helpers.ts';

const SHORT = {
  connect: 2000,
  greeting: 2000,
  command: 2000,
  mail: 2000,
  rcpt: 2000,
  dataInit: 2000,
  dataFinal: 2000,
};
const MESSAGE = 'From: a@origin.example\r\nTo: b@dest.example\r\nSubject: tls\r\n\r\nhello\r\n';
const TLS_OPTIONAL = 'From: a@origin.example\r\nTLS-Required: No\r\nSubject: tls\r\n\r\nhello\r\n';

let dir: string;
let ca: TestCa;
let rogue: TestCa;
/** Certificates by what they are; `mx1` etc. are issued by the test CA for `<name>.example` MX names. */
const certs: Record<string, TestCertificate> = {};
let policyHost: PolicyServer;
let smtpPort = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailframe-sts-'));
  ca = await makeTestCa(dir, 'test-ca');
  rogue = await makeTestCa(dir, 'rogue-ca');
  const issue = async (name: string, dnsNames: string[], days = 1, by = ca) =>
    (certs[name] = await issueCertificate(dir, by, name, { dnsNames, days }));
  await issue('good', ['mx1.sts.example', 'mx.dane.example', 'mx.ta.example']);
  await issue('expired', ['mx1.sts.example', 'mx.ta.example'], -1);
  await issue('wrongName', ['elsewhere.example']);
  await issue('rogueGood', ['mx1.sts.example'], 1, rogue);
  certs['selfSigned'] = await makeCertificate(dir, 'self', 'mx1.sts.example');
  const policyDomains = [
    'sts',
    'unlisted.sts',
    'bad-type',
    'gone',
    'garbled',
    'huge',
    'cached',
    'aging',
    'both',
  ];
  await issue(
    'policy',
    policyDomains.map((d) => `mta-sts.${d}.example`),
  );
  const policyRogue = await issue('policyRogue', ['mta-sts.rogue.example'], 1, rogue);
  // Names only in the CN, or as a partial wildcard: not a DNS-ID for MTA-STS (RFC 8461 3.3, 4.2).
  const cnOnly = (name: string, cn: string) =>
    issueCertificate(dir, ca, name, { dnsNames: [], commonName: cn }).then((c) => (certs[name] = c));
  await cnOnly('mxCnOnly', 'mx1.sts.example');
  const policyCnOnly = await cnOnly('policyCnOnly', 'mta-sts.cn-only.example');
  const policyPartial = await issue('policyPartial', ['mta*.partial.example']);
  const good = certs['policy'] as TestCertificate;
  policyHost = await startPolicyServer(
    new Map([
      ['mta-sts.rogue.example', policyRogue],
      ['mta-sts.cn-only.example', policyCnOnly],
      ['mta-sts.partial.example', policyPartial],
    ]),
    good,
  );
  smtpPort = await freePort();
});

afterAll(async () => {
  await policyHost?.close();
  await rm(dir, { recursive: true, force: true });
});

let cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  const list = cleanups.reverse();
  cleanups = [];
  for (const fn of list) await fn();
});

async function remote(address: string, cert: TestCertificate, opts: PeerOptions = {}): Promise<Remote> {
  const r = await startRemote(address, smtpPort, { key: cert.key, cert: cert.cert, ...opts });
  cleanups.push(() => r.close());
  return r;
}

async function dns(zone: Zone): Promise<TestDnsServer> {
  const d = await startDns(zone);
  cleanups.push(() => d.close());
  return d;
}

interface Sts extends DeliveryServer {
  readonly events: TlsSessionEvent[];
  readonly logs: ReadonlyArray<Record<string, unknown>>;
}

/** A mailframe server with deliver-mx (trusting the test CA) and a tlsReport sink, resolving through `d`. */
async function mx(
  d: TestDnsServer,
  config: Record<string, unknown> = {},
  opts: { dataDir?: string; clock?: { now(): number }; more?: ReadonlyArray<{ plugin: string }> } = {},
): Promise<Sts> {
  const { more = [], ...serverOpts } = opts;
  const events: TlsSessionEvent[] = [];
  const logs: Array<Record<string, unknown>> = [];
  const sink = tlsReportSink(events);
  const s = await startDeliveryServer(
    [
      {
        plugin: 'deliver-mx',
        config: {
          port: smtpPort,
          timeouts: SHORT,
          caFile: ca.certPath,
          mtaSts: { caFile: ca.certPath, port: policyHost.port, timeout: 2000 },
          ...config,
        },
      },
      { plugin: sink.name },
      ...more,
    ],
    {
      dns: { servers: [d.address], timeout: 500, attempts: 1, trustAd: true },
      logger: pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) }),
      dirPrefix: 'mailframe-sts-',
      definitions: [sink],
      ...serverOpts,
    },
  );
  cleanups.push(() => s.close());
  return { ...s, events, logs };
}

const deliver = deliverJob;

const job = (to: string, extra: Partial<Parameters<typeof deliveryJob>[0]> = {}) =>
  deliveryJob({ to: [to], message: MESSAGE, ...extra });

const outcome = (r: DeliveryReport) => r.results.map((x) => [x.status, x.reply?.code, x.reply?.enhanced]);

/** The events in a comparable shape. */
const seen = (events: readonly TlsSessionEvent[]) =>
  events.map((e) => [e.policyDomain, e.policyType, e.result, e.receivingMxHostname ?? null]);

/** A domain with one MX (`mx1.<domain>` unless given) on `address`, and an MTA-STS TXT record. */
function stsDomain(domain: string, address: string, id = '1', mxName = `mx1.${domain}`): Zone {
  return {
    [domain]: { MX: [{ exchange: mxName, preference: 10 }] },
    [mxName]: { A: [address] },
    [`_mta-sts.${domain}`]: { TXT: [`v=STSv1; id=${id}`] },
    [`mta-sts.${domain}`]: { A: ['127.0.0.1'] },
  };
}

describe('MTA-STS (RFC 8461)', () => {
  it('enforce: delivers over verified TLS to a listed MX, never to an MX the policy does not list', async () => {
    const one = await remote('127.0.0.2', certs['good'] as TestCertificate);
    const other = await remote('127.0.0.3', certs['good'] as TestCertificate);
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    const zone: Zone = {
      ...stsDomain('sts.example', '127.0.0.2'),
      // Same policy host answer, but the MX is not in it.
      ...stsDomain('unlisted.sts.example', '127.0.0.3', '1', 'mx9.sts.example'),
      'mta-sts.unlisted.sts.example': { A: ['127.0.0.1'] },
    };
    policyHost.set('mta-sts.unlisted.sts.example', { body: stsPolicy('enforce', ['*.other.example']) });
    const s = await mx(await dns(zone));
    expect(outcome(await deliver(s, job('bob@sts.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(one.received[0]?.secure).toBe(true);

    const refused = await deliver(s, job('bob@unlisted.sts.example'));
    expect(outcome(refused)).toEqual([['deferred', 451, '4.7.5']]);
    expect(refused.results[0]?.reply?.text).toMatch(/not in the MTA-STS policy/);
    expect(other.connections()).toBe(0);
    expect(seen(s.events)).toEqual([
      ['sts.example', 'sts', 'success', 'mx1.sts.example'],
      ['unlisted.sts.example', 'sts', 'validation-failure', 'mx9.sts.example'],
    ]);
    expect(s.events[0]?.policyStrings).toContain('mode: enforce');
    expect(s.events[0]?.mxHosts).toEqual(['mx1.sts.example']);
  });

  it('enforce: an expired, misnamed, untrusted or self-signed certificate defers (4.7.5), nothing is sent', async () => {
    const cases = [
      ['expired', 'certificate-expired'],
      ['wrongName', 'certificate-host-mismatch'],
      ['rogueGood', 'certificate-not-trusted'],
      ['selfSigned', 'certificate-not-trusted'],
    ] as const;
    const s0 = await dns({});
    for (const [name, failure] of cases) {
      const r = await remote('127.0.0.2', certs[name] as TestCertificate);
      s0.set('sts.example', { MX: [{ exchange: 'mx1.sts.example', preference: 10 }] });
      policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
      for (const [n, e] of Object.entries(stsDomain('sts.example', '127.0.0.2'))) s0.set(n, e);
      const s = await mx(s0);
      const report = await deliver(s, job('bob@sts.example'));
      expect([name, ...(outcome(report)[0] ?? [])]).toEqual([name, 'deferred', 451, '4.7.5']);
      expect(report.results[0]?.reply?.text).toMatch(/TLS policy mta-sts\/enforce/);
      expect(r.received).toHaveLength(0);
      expect(seen(s.events)).toEqual([['sts.example', 'sts', failure, 'mx1.sts.example']]);
      await r.close();
    }
  });

  it('enforce: a server without STARTTLS (stripped) defers (4.7.4), never plaintext', async () => {
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate, { hideSTARTTLS: true });
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    const s = await mx(await dns(stsDomain('sts.example', '127.0.0.2')));
    expect(outcome(await deliver(s, job('bob@sts.example')))).toEqual([['deferred', 451, '4.7.4']]);
    expect(r.received).toHaveLength(0);
    expect(seen(s.events)).toEqual([['sts.example', 'sts', 'starttls-not-supported', 'mx1.sts.example']]);
  });

  it('testing: delivers despite a bad certificate or an unlisted MX, and reports each failure', async () => {
    const self = await remote('127.0.0.2', certs['selfSigned'] as TestCertificate);
    const good = await remote('127.0.0.3', certs['good'] as TestCertificate);
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('testing', ['mx1.sts.example']) });
    policyHost.set('mta-sts.unlisted.sts.example', { body: stsPolicy('testing', ['mx1.sts.example']) });
    const zone: Zone = {
      ...stsDomain('sts.example', '127.0.0.2'),
      ...stsDomain('unlisted.sts.example', '127.0.0.3', '1', 'mx7.sts.example'),
    };
    const s = await mx(await dns(zone));
    expect(outcome(await deliver(s, job('bob@sts.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(outcome(await deliver(s, job('bob@unlisted.sts.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(self.received[0]?.secure).toBe(true);
    expect(good.received[0]?.secure).toBe(true);
    expect(seen(s.events)).toEqual([
      ['sts.example', 'sts', 'certificate-not-trusted', 'mx1.sts.example'],
      ['unlisted.sts.example', 'sts', 'validation-failure', 'mx7.sts.example'],
    ]);
  });

  it('a policy that cannot be had leaves the domain without one, reported by failure type', async () => {
    const r = await remote('127.0.0.2', certs['selfSigned'] as TestCertificate);
    policyHost.set('mta-sts.bad-type.example', {
      body: stsPolicy('enforce', ['x.example']),
      contentType: 'text/html',
    });
    policyHost.set('mta-sts.rogue.example', { body: stsPolicy('enforce', ['x.example']) });
    policyHost.set('mta-sts.gone.example', {
      body: '',
      status: 301,
      headers: { location: 'https://mta-sts.sts.example/.well-known/mta-sts.txt' },
    });
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['x.example']) });
    const redirectedTo = policyHost.requests('mta-sts.sts.example');
    const zone: Zone = {
      ...stsDomain('bad-type.example', '127.0.0.2'),
      ...stsDomain('rogue.example', '127.0.0.2'),
      ...stsDomain('gone.example', '127.0.0.2'),
      ...stsDomain('garbled.example', '127.0.0.2'),
      ...stsDomain('huge.example', '127.0.0.2'),
    };
    // Over 64 KiB (RFC 8461 3.3).
    policyHost.set('mta-sts.huge.example', {
      body: stsPolicy(
        'enforce',
        Array.from({ length: 3000 }, (_, i) => `mx${i}.huge.example`),
      ),
    });
    policyHost.set('mta-sts.garbled.example', {
      body: 'version: STSv1\r\nmode: enforce\r\nmax_age: 99999999999\r\n',
    });
    const s = await mx(await dns(zone));
    for (const d of [
      'bad-type.example',
      'rogue.example',
      'gone.example',
      'garbled.example',
      'huge.example',
    ]) {
      // No policy: opportunistic, the self-signed certificate is fine.
      expect([d, ...(outcome(await deliver(s, job(`bob@${d}`)))[0] ?? [])]).toEqual([
        d,
        'delivered',
        250,
        '2.6.0',
      ]);
    }
    expect(r.received).toHaveLength(5);
    const failures = s.events.filter((e) => e.result !== 'success');
    expect(failures.map((e) => [e.policyDomain, e.policyType, e.result])).toEqual([
      ['bad-type.example', 'sts', 'sts-policy-invalid'],
      ['rogue.example', 'sts', 'sts-webpki-invalid'],
      ['gone.example', 'sts', 'sts-policy-fetch-error'],
      ['garbled.example', 'sts', 'sts-policy-invalid'],
      ['huge.example', 'sts', 'sts-policy-invalid'],
    ]);
    // The redirect was not followed.
    expect(policyHost.requests('mta-sts.sts.example')).toBe(redirectedTo);
  });

  it('a certificate naming the host only in its CN, or by a partial wildcard, is no DNS-ID (policy host and MX)', async () => {
    const r = await remote('127.0.0.2', certs['mxCnOnly'] as TestCertificate);
    for (const d of ['cn-only', 'partial'])
      policyHost.set(`mta-sts.${d}.example`, { body: stsPolicy('enforce', ['x.example']) });
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    const zone: Zone = {
      ...stsDomain('cn-only.example', '127.0.0.2', '1', 'mx1.sts.example'),
      ...stsDomain('partial.example', '127.0.0.2', '1', 'mx1.sts.example'),
      ...stsDomain('sts.example', '127.0.0.2'),
    };
    const s = await mx(await dns(zone));
    // No policy could be had: opportunistic delivery.
    for (const d of ['cn-only.example', 'partial.example'])
      expect([d, ...(outcome(await deliver(s, job(`bob@${d}`)))[0] ?? [])]).toEqual([
        d,
        'delivered',
        250,
        '2.6.0',
      ]);
    // Under `enforce` the MX certificate must carry the name as a DNS-ID.
    expect(outcome(await deliver(s, job('bob@sts.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(r.received).toHaveLength(2);
    expect(s.events.filter((e) => e.result !== 'success').map((e) => [e.policyDomain, e.result])).toEqual([
      ['cn-only.example', 'sts-webpki-invalid'],
      ['partial.example', 'sts-webpki-invalid'],
      ['sts.example', 'certificate-host-mismatch'],
    ]);
  });

  it('a policy host that never answers times out: no policy, reported as a fetch error', async () => {
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate);
    // Accepts on the policy port and says nothing, not even the TLS handshake.
    const held: Socket[] = [];
    const silent = createNetServer((socket) => void held.push(socket));
    await new Promise<void>((resolve) => silent.listen(policyHost.port, '127.0.0.5', resolve));
    cleanups.push(async () => {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    });
    const zone: Zone = {
      ...stsDomain('silent.example', '127.0.0.2', '1', 'mx1.sts.example'),
      'mta-sts.silent.example': { A: ['127.0.0.5'] },
    };
    const s = await mx(await dns(zone), {
      mtaSts: { caFile: ca.certPath, port: policyHost.port, timeout: 300 },
    });
    expect(outcome(await deliver(s, job('bob@silent.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(held.length).toBe(1);
    expect(s.events.map((e) => [e.policyType, e.result])).toEqual([
      ['sts', 'sts-policy-fetch-error'],
      ['no-policy-found', 'success'],
    ]);
    expect(r.received).toHaveLength(1);
  });

  it('the cache survives a restart, is used while the policy host fails, and is replaced when the id changes', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mailframe-sts-cache-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate);
    // The MX is not in the policy: with the policy, refused; without it, delivered.
    policyHost.set('mta-sts.cached.example', { body: stsPolicy('enforce', ['mx1.elsewhere.example']) });
    // The certificate on 127.0.0.2 is for mx1.sts.example.
    const d = await dns(stsDomain('cached.example', '127.0.0.2', 'one', 'mx1.sts.example'));
    const first = await mx(d, {}, { dataDir });
    expect(outcome(await deliver(first, job('bob@cached.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(policyHost.requests('mta-sts.cached.example')).toBe(1);
    expect(existsSync(join(dataDir, 'deliver-mx', 'mta-sts.json'))).toBe(true);
    await first.close();

    // A new server, the policy host gone: the cached policy still applies, without a fetch.
    policyHost.set('mta-sts.cached.example', undefined);
    const second = await mx(d, {}, { dataDir });
    expect(outcome(await deliver(second, job('bob@cached.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(policyHost.requests('mta-sts.cached.example')).toBe(1);

    // The id changes and the fetch fails: the cached policy still applies, the failure is reported.
    d.set('_mta-sts.cached.example', { TXT: ['v=STSv1; id=two'] });
    const third = await mx(d, {}, { dataDir });
    expect(outcome(await deliver(third, job('bob@cached.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(policyHost.requests('mta-sts.cached.example')).toBe(2);
    expect(third.events.map((e) => e.result)).toEqual(['sts-policy-fetch-error', 'validation-failure']);

    // The new policy can be had: it replaces the cached one at once.
    policyHost.set('mta-sts.cached.example', { body: stsPolicy('enforce', ['*.sts.example']) });
    d.set('_mta-sts.cached.example', { TXT: ['v=STSv1; id=three'] });
    const fourth = await mx(d, {}, { dataDir });
    expect(outcome(await deliver(fourth, job('bob@cached.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(r.received).toHaveLength(1);
    const saved = JSON.parse(await readFile(join(dataDir, 'deliver-mx', 'mta-sts.json'), 'utf8'));
    expect(saved.policies).toEqual([expect.objectContaining({ domain: 'cached.example', id: 'three' })]);
  });

  it('a cached policy outlives its TXT record and policy host until max_age, not after', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mailframe-sts-cache-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate);
    policyHost.set('mta-sts.aging.example', { body: stsPolicy('enforce', ['mx1.elsewhere.example'], 60) });
    const d = await dns(stsDomain('aging.example', '127.0.0.2'));
    let now = Date.parse('2026-12-04T10:00:00Z');
    const clock = { now: () => now };
    const first = await mx(d, {}, { dataDir, clock });
    expect(outcome(await deliver(first, job('bob@aging.example')))).toEqual([['deferred', 451, '4.7.5']]);
    // The policy host and the TXT record go away: the unexpired cached policy still holds.
    policyHost.set('mta-sts.aging.example', undefined);
    d.set('_mta-sts.aging.example', undefined);
    now += 30_000;
    expect(outcome(await deliver(first, job('bob@aging.example')))).toEqual([['deferred', 451, '4.7.5']]);
    // max_age is 60 s: past it there is no policy left, in memory ...
    now += 31_000;
    expect(outcome(await deliver(first, job('bob@aging.example')))).toEqual([['delivered', 250, '2.6.0']]);
    await first.close();
    // ... nor after a restart.
    const second = await mx(d, {}, { dataDir, clock });
    expect(outcome(await deliver(second, job('bob@aging.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(r.received).toHaveLength(2);
  });
});

/** A DNSSEC-signed domain (AD bit on every name) with one MX `mx.<domain>` on `address`, TLSA as given. */
function daneDomain(
  domain: string,
  address: string,
  records: ReturnType<typeof tlsa>[],
  secure: { mx?: boolean; tlsa?: boolean; address?: boolean } = {},
): Zone {
  const host = `mx.${domain}`;
  return {
    [domain]: { MX: [{ exchange: host, preference: 10 }], authenticated: secure.mx ?? true },
    [host]: { A: [address], authenticated: secure.address ?? true },
    [`_25._tcp.${host}`]: { TLSA: records, authenticated: secure.tlsa ?? true },
  };
}

describe('DANE (RFC 7672)', () => {
  it('DANE-EE: a certificate matching the TLSA record delivers, whatever its name, issuer and dates', async () => {
    // Expired, and for another name: DANE-EE looks at the key alone (RFC 7672 3.1.1).
    const expired = certs['expired'] as TestCertificate;
    const r = await remote('127.0.0.2', expired);
    const zone: Zone = {
      ...daneDomain('ee-spki-sha256.example', '127.0.0.2', [tlsa(expired.cert, 3, 1, 1)]),
      ...daneDomain('ee-cert-sha512.example', '127.0.0.2', [tlsa(expired.cert, 3, 0, 2)]),
      ...daneDomain('ee-spki-full.example', '127.0.0.2', [tlsa(expired.cert, 3, 1, 0)]),
      ...daneDomain('ee-second.example', '127.0.0.2', [
        tlsa((certs['good'] as TestCertificate).cert, 3, 1, 1),
        tlsa(expired.cert, 3, 0, 1),
      ]),
    };
    const s = await mx(await dns(zone));
    for (const d of [
      'ee-spki-sha256.example',
      'ee-cert-sha512.example',
      'ee-spki-full.example',
      'ee-second.example',
    ]) {
      expect([d, ...(outcome(await deliver(s, job(`bob@${d}`)))[0] ?? [])]).toEqual([
        d,
        'delivered',
        250,
        '2.6.0',
      ]);
    }
    expect(r.received.map((m) => m.secure)).toEqual([true, true, true, true]);
    expect(s.events.map((e) => [e.policyType, e.result])).toEqual(Array(4).fill(['tlsa', 'success']));
    expect(s.events[0]?.policyStrings[0]).toMatch(/^3 1 1 [0-9a-f]{64}$/);
  });

  it('DANE-EE: a certificate matching no TLSA record defers (4.7.5), nothing is sent', async () => {
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate);
    const zone = daneDomain('mismatch.example', '127.0.0.2', [
      tlsa((certs['selfSigned'] as TestCertificate).cert, 3, 1, 1),
    ]);
    const s = await mx(await dns(zone));
    const report = await deliver(s, job('bob@mismatch.example'));
    expect(outcome(report)).toEqual([['deferred', 451, '4.7.5']]);
    expect(report.results[0]?.reply?.text).toMatch(/TLS policy dane\/dane/);
    expect(r.received).toHaveLength(0);
    expect(seen(s.events)).toEqual([
      ['mismatch.example', 'tlsa', 'validation-failure', 'mx.mismatch.example'],
    ]);
  });

  it('DANE-TA: a chain to the trust anchor naming the MX host delivers; another name or an expired leaf defers', async () => {
    const good = await remote('127.0.0.2', certs['good'] as TestCertificate);
    const named = await remote('127.0.0.3', certs['wrongName'] as TestCertificate);
    const expired = await remote('127.0.0.4', certs['expired'] as TestCertificate);
    const anchor = [tlsa(ca.cert, 2, 0, 1)];
    const zone: Zone = {
      ...daneDomain('ta.example', '127.0.0.2', anchor),
      ...daneDomain('ta-name.example', '127.0.0.3', anchor),
      ...daneDomain('ta-old.example', '127.0.0.4', anchor),
      ...daneDomain('ta-other.example', '127.0.0.2', [tlsa(rogue.cert, 2, 1, 1)]),
    };
    const s = await mx(await dns(zone));
    expect(outcome(await deliver(s, job('bob@ta.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(good.received[0]?.secure).toBe(true);
    expect(outcome(await deliver(s, job('bob@ta-name.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(outcome(await deliver(s, job('bob@ta-old.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(outcome(await deliver(s, job('bob@ta-other.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(named.received).toHaveLength(0);
    expect(expired.received).toHaveLength(0);
    expect(s.events.map((e) => [e.policyDomain, e.result])).toEqual([
      ['ta.example', 'success'],
      ['ta-name.example', 'certificate-host-mismatch'],
      ['ta-old.example', 'certificate-expired'],
      ['ta-other.example', 'validation-failure'],
    ]);
  });

  it('DANE-TA: a certificate the anchor issued to someone else (not a CA) cannot issue one for the MX host', async () => {
    // Anyone with a leaf certificate from the trust anchor (CA:FALSE, no key usage) signs a leaf for the MX.
    const other = await issueCertificate(dir, ca, 'ta-holder', { dnsNames: ['holder.example'] });
    const forged = await issueCertificate(dir, { ...other, name: 'ta-holder' }, 'ta-forged', {
      dnsNames: ['mx.ta.example'],
    });
    const r = await remote('127.0.0.2', forged);
    const s = await mx(await dns(daneDomain('ta.example', '127.0.0.2', [tlsa(ca.cert, 2, 0, 1)])));
    expect(outcome(await deliver(s, job('bob@ta.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(r.received).toHaveLength(0);
    expect(s.events.map((e) => [e.policyDomain, e.result])).toEqual([['ta.example', 'validation-failure']]);
  });

  it('an MX host behind a CNAME: TLSA records at the CNAME target apply, and it is a reference name', async () => {
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate);
    const zone: Zone = {
      // DANE-TA: the certificate names mx.ta.example, the CNAME target, not the MX host name.
      'cname.example': { MX: [{ exchange: 'alias.cname.example', preference: 10 }], authenticated: true },
      'alias.cname.example': { CNAME: 'mx.ta.example', authenticated: true },
      'mx.ta.example': { A: ['127.0.0.2'], authenticated: true },
      '_25._tcp.mx.ta.example': { TLSA: [tlsa(ca.cert, 2, 0, 1)], authenticated: true },
      // A record at the target that the certificate does not match: DANE says no.
      'cname-bad.example': {
        MX: [{ exchange: 'alias.cname-bad.example', preference: 10 }],
        authenticated: true,
      },
      'alias.cname-bad.example': { CNAME: 'mx.dane.example', authenticated: true },
      'mx.dane.example': { A: ['127.0.0.2'], authenticated: true },
      '_25._tcp.mx.dane.example': {
        TLSA: [tlsa((certs['selfSigned'] as TestCertificate).cert, 3, 1, 1)],
        authenticated: true,
      },
    };
    const s = await mx(await dns(zone));
    expect(outcome(await deliver(s, job('bob@cname.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(outcome(await deliver(s, job('bob@cname-bad.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(r.received).toHaveLength(1);
    expect(s.events.map((e) => [e.policyDomain, e.policyType, e.result])).toEqual([
      ['cname.example', 'tlsa', 'success'],
      ['cname-bad.example', 'tlsa', 'validation-failure'],
    ]);
  });

  it('ignores TLSA records from an insecure answer, and any TLSA below an insecure MX or address lookup', async () => {
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate);
    const wrong = [tlsa((certs['selfSigned'] as TestCertificate).cert, 3, 1, 1)];
    const zone: Zone = {
      ...daneDomain('insecure-tlsa.example', '127.0.0.2', wrong, { tlsa: false }),
      ...daneDomain('insecure-mx.example', '127.0.0.2', wrong, { mx: false }),
      ...daneDomain('insecure-a.example', '127.0.0.2', wrong, { address: false }),
    };
    const s = await mx(await dns(zone));
    expect(outcome(await deliver(s, job('bob@insecure-tlsa.example')))).toEqual([
      ['delivered', 250, '2.6.0'],
    ]);
    expect(outcome(await deliver(s, job('bob@insecure-mx.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(outcome(await deliver(s, job('bob@insecure-a.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(r.received).toHaveLength(3);
    expect(s.events.map((e) => [e.policyType, e.result])).toEqual(
      Array(3).fill(['no-policy-found', 'success']),
    );
  });

  it('without dns.trustAd the AD bit is not believed: no DANE (with it, the mismatch defers)', async () => {
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate);
    const zone = daneDomain('untrusted.example', '127.0.0.2', [
      tlsa((certs['selfSigned'] as TestCertificate).cert, 3, 1, 1),
    ]);
    const d = await dns(zone);
    const s = await startDeliveryServer(
      [{ plugin: 'deliver-mx', config: { port: smtpPort, timeouts: SHORT } }],
      { dns: { servers: [d.address], timeout: 500, attempts: 1 } },
    );
    cleanups.push(() => s.close());
    expect(outcome(await deliver(s, job('bob@untrusted.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(r.received).toHaveLength(1);
    const trusting = await mx(d);
    expect(outcome(await deliver(trusting, job('bob@untrusted.example')))).toEqual([
      ['deferred', 451, '4.7.5'],
    ]);
    expect(r.received).toHaveLength(1);
  });

  it('a server without STARTTLS (stripped) defers (4.7.4); only unusable TLSA records still make TLS mandatory', async () => {
    const good = certs['good'] as TestCertificate;
    const r = await remote('127.0.0.2', good, { hideSTARTTLS: true });
    const zone: Zone = {
      ...daneDomain('stripped.example', '127.0.0.2', [tlsa(good.cert, 3, 1, 1)]),
      // PKIX-EE (1) is unusable for SMTP (RFC 7672 3.1.3).
      ...daneDomain('unusable.example', '127.0.0.2', [tlsa(good.cert, 1, 1, 1)]),
      ...daneDomain('unusable-tls.example', '127.0.0.3', [tlsa(good.cert, 0, 1, 1)]),
    };
    const tls = await remote('127.0.0.3', certs['selfSigned'] as TestCertificate);
    const s = await mx(await dns(zone));
    expect(outcome(await deliver(s, job('bob@stripped.example')))).toEqual([['deferred', 451, '4.7.4']]);
    const unusable = await deliver(s, job('bob@unusable.example'));
    expect(outcome(unusable)).toEqual([['deferred', 451, '4.7.4']]);
    expect(unusable.results[0]?.reply?.text).toMatch(/\(TLS policy dane\/encrypt\)$/);
    expect(r.received).toHaveLength(0);
    // With STARTTLS, any certificate will do: delivered, reported as not validated.
    expect(outcome(await deliver(s, job('bob@unusable-tls.example')))).toEqual([['delivered', 250, '2.6.0']]);
    expect(tls.received[0]?.secure).toBe(true);
    expect(s.events.map((e) => [e.policyType, e.result])).toEqual([
      ['tlsa', 'starttls-not-supported'],
      ['tlsa', 'starttls-not-supported'],
      ['tlsa', 'tlsa-invalid'],
    ]);
  });

  it('DANE takes precedence over MTA-STS; `dane-only` defers where there is no DANE', async () => {
    // Self-signed: MTA-STS enforce would refuse it, the TLSA record vouches for it.
    const self = certs['selfSigned'] as TestCertificate;
    const r = await remote('127.0.0.2', self);
    policyHost.set('mta-sts.both.example', { body: stsPolicy('enforce', ['mx.both.example']) });
    const zone: Zone = {
      ...daneDomain('both.example', '127.0.0.2', [tlsa(self.cert, 3, 1, 1)]),
      '_mta-sts.both.example': { TXT: ['v=STSv1; id=1'] },
      'mta-sts.both.example': { A: ['127.0.0.1'] },
      'plain.example': { MX: [{ exchange: 'mx.plain.example', preference: 10 }] },
      'mx.plain.example': { A: ['127.0.0.2'] },
    };
    const s = await mx(await dns(zone), { tlsPolicies: { 'plain.example': 'dane-only' } });
    expect(outcome(await deliver(s, job('bob@both.example')))).toEqual([['delivered', 250, '2.6.0']]);
    const report = await deliver(s, job('bob@plain.example'));
    expect(outcome(report)).toEqual([['deferred', 451, '4.7.5']]);
    expect(r.received).toHaveLength(1);
    expect(s.events.map((e) => [e.policyDomain, e.policyType, e.result])).toEqual([
      ['both.example', 'tlsa', 'success'],
      ['plain.example', 'tlsa', 'dane-required'],
    ]);
  });
});

describe('REQUIRETLS (RFC 8689) end to end', () => {
  const requireTls = { attributes: { requireTls: true } };

  it('relays over DANE or MTA-STS authenticated TLS, with the parameter, to a next hop that offers it', async () => {
    // Self-signed: only DANE can vouch for it.
    const self = certs['selfSigned'] as TestCertificate;
    const dane = await remote('127.0.0.3', self);
    const r = await remote('127.0.0.2', certs['good'] as TestCertificate);
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('testing', ['mx1.sts.example']) });
    policyHost.set('mta-sts.unlisted.sts.example', { body: stsPolicy('testing', ['mx2.sts.example']) });
    const zone: Zone = {
      ...daneDomain('dane.example', '127.0.0.3', [tlsa(self.cert, 3, 1, 1)]),
      ...stsDomain('sts.example', '127.0.0.2'),
      ...stsDomain('unlisted.sts.example', '127.0.0.2', '1', 'mx1.sts.example'),
    };
    const s = await mx(await dns(zone));
    expect(outcome(await deliver(s, job('bob@dane.example', requireTls)))).toEqual([
      ['delivered', 250, '2.6.0'],
    ]);
    expect(dane.received.map((m) => [m.secure, m.requireTls])).toEqual([[true, true]]);
    // MTA-STS in testing mode counts as enforce for REQUIRETLS (RFC 8689 5): a listed MX is
    // used, an unlisted one is not (without REQUIRETLS, testing would deliver there).
    expect(outcome(await deliver(s, job('bob@sts.example', requireTls)))).toEqual([
      ['delivered', 250, '2.6.0'],
    ]);
    expect(outcome(await deliver(s, job('bob@unlisted.sts.example', requireTls)))).toEqual([
      ['deferred', 451, '4.7.5'],
    ]);
    expect(r.received.map((m) => [m.secure, m.requireTls])).toEqual([[true, true]]);
  });

  it('bounces with 5.7.30 when no authenticated TLS path exists or the next hop lacks REQUIRETLS', async () => {
    const good = certs['good'] as TestCertificate;
    const r = await remote('127.0.0.2', good, { hideREQUIRETLS: true });
    const zone: Zone = {
      'plain.example': { MX: [{ exchange: 'mx.plain.example', preference: 10 }] },
      'mx.plain.example': { A: ['127.0.0.2'] },
      ...daneDomain('dane.example', '127.0.0.2', [tlsa(good.cert, 3, 1, 1)]),
    };
    const s = await mx(await dns(zone));
    const noPath = await deliver(s, job('bob@plain.example', requireTls));
    expect(outcome(noPath)).toEqual([['failed', 550, '5.7.30']]);
    expect(r.connections()).toBe(0);
    const noSupport = await deliver(s, job('bob@dane.example', requireTls));
    expect(outcome(noSupport)).toEqual([['failed', 550, '5.7.30']]);
    expect(r.received).toHaveLength(0);
  });

  it('a pooled connection without authenticated TLS is not used for a REQUIRETLS message', async () => {
    const good = certs['good'] as TestCertificate;
    const r = await remote('127.0.0.2', good);
    const zone: Zone = {
      'dest.example': { MX: [{ exchange: 'mx1.sts.example', preference: 10 }], authenticated: true },
      'mx1.sts.example': { A: ['127.0.0.2'], authenticated: true },
    };
    const s = await mx(await dns(zone), { idleTimeout: 60_000 });
    expect(outcome(await deliver(s, job('bob@dest.example')))).toEqual([['delivered', 250, '2.6.0']]);
    // Secure MX lookup and a certificate valid for the MX name: authenticated (RFC 8689 5).
    expect(outcome(await deliver(s, job('bob@dest.example', requireTls)))).toEqual([
      ['delivered', 250, '2.6.0'],
    ]);
    expect(r.connections()).toBe(2);
    expect(r.received.map((m) => m.requireTls)).toEqual([false, true]);
  });
});

describe('TLS-Required: No (RFC 8689 section 4)', () => {
  it('delivers despite an MTA-STS or DANE failure, over TLS when it works', async () => {
    const self = certs['selfSigned'] as TestCertificate;
    const r = await remote('127.0.0.2', self);
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    const zone: Zone = {
      ...stsDomain('sts.example', '127.0.0.2'),
      ...daneDomain('dane.example', '127.0.0.2', [tlsa((certs['good'] as TestCertificate).cert, 3, 1, 1)]),
    };
    const s = await mx(await dns(zone));
    // Without the header both are refused ...
    expect(outcome(await deliver(s, job('bob@sts.example')))).toEqual([['deferred', 451, '4.7.5']]);
    expect(outcome(await deliver(s, job('bob@dane.example')))).toEqual([['deferred', 451, '4.7.5']]);
    // ... with it both go, still over TLS.
    const optional = { message: TLS_OPTIONAL };
    expect(outcome(await deliver(s, job('bob@sts.example', optional)))).toEqual([
      ['delivered', 250, '2.6.0'],
    ]);
    expect(outcome(await deliver(s, job('bob@dane.example', optional)))).toEqual([
      ['delivered', 250, '2.6.0'],
    ]);
    expect(r.received.map((m) => m.secure)).toEqual([true, true]);
  });

  it("sets aside the domain's policy only: the operator's `verify` or `encrypt` still holds", async () => {
    const self = await remote('127.0.0.2', certs['selfSigned'] as TestCertificate);
    const plain = await remote('127.0.0.3', certs['good'] as TestCertificate, { hideSTARTTLS: true });
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    policyHost.set('mta-sts.unlisted.sts.example', { body: stsPolicy('enforce', ['mx7.sts.example']) });
    const zone: Zone = {
      ...stsDomain('sts.example', '127.0.0.2'),
      ...stsDomain('unlisted.sts.example', '127.0.0.3', '1', 'mx7.sts.example'),
    };
    const s = await mx(await dns(zone), {
      tlsPolicies: { 'sts.example': 'verify', 'unlisted.sts.example': 'encrypt' },
    });
    const optional = { message: TLS_OPTIONAL };
    const unverified = await deliver(s, job('bob@sts.example', optional));
    expect(outcome(unverified)).toEqual([['deferred', 451, '4.7.5']]);
    expect(unverified.results[0]?.reply?.text).toMatch(/TLS policy table\/verify/);
    const clear = await deliver(s, job('bob@unlisted.sts.example', optional));
    expect(outcome(clear)).toEqual([['deferred', 451, '4.7.4']]);
    expect(self.received).toHaveLength(0);
    expect(plain.received).toHaveLength(0);
  });

  it('a connection opened with the policy set aside is not reused for mail the policy covers', async () => {
    const r = await remote('127.0.0.2', certs['selfSigned'] as TestCertificate);
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    const s = await mx(await dns(stsDomain('sts.example', '127.0.0.2')), { idleTimeout: 60_000 });
    const optional = job('bob@sts.example', { message: TLS_OPTIONAL });
    expect(outcome(await deliver(s, optional))).toEqual([['delivered', 250, '2.6.0']]);
    // The idle connection has an unverified certificate: the next message under `enforce` must not take it.
    const report = await deliver(s, job('bob@sts.example'));
    expect(outcome(report)).toEqual([['deferred', 451, '4.7.5']]);
    expect(r.received).toHaveLength(1);
    // Another TLS-Required: No message may still use an idle connection opened like its own.
    expect(outcome(await deliver(s, job('bob@sts.example', { message: TLS_OPTIONAL })))).toEqual([
      ['delivered', 250, '2.6.0'],
    ]);
    expect(r.received).toHaveLength(2);
  });

  it('is ignored for a REQUIRETLS message', async () => {
    const r = await remote('127.0.0.2', certs['selfSigned'] as TestCertificate);
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    const s = await mx(await dns(stsDomain('sts.example', '127.0.0.2')));
    const report = await deliver(
      s,
      job('bob@sts.example', { message: TLS_OPTIONAL, attributes: { requireTls: true } }),
    );
    expect(outcome(report)).toEqual([['deferred', 451, '4.7.5']]);
    expect(report.results[0]?.reply?.text).toMatch(/TLS policy mta-sts\/enforce/);
    expect(r.received).toHaveLength(0);
  });

  it("a TLS report's own delivery (tlsReport attribute) goes through and is left out of the reports", async () => {
    const r = await remote('127.0.0.2', certs['selfSigned'] as TestCertificate);
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    const zone = await dns(stsDomain('sts.example', '127.0.0.2'));
    // The report mail carries TLS-Required: No, so it goes despite the policy failure.
    const s = await mx(zone);
    const report = await deliver(
      s,
      job('tlsrpt@sts.example', { message: TLS_OPTIONAL, attributes: { tlsReport: true } }),
    );
    expect(outcome(report)).toEqual([['delivered', 250, '2.6.0']]);
    expect(r.received).toHaveLength(1);
    // Its sessions are never counted: the same failure is reported for other mail only
    // (servers of their own, so no pooled connection is shared).
    const quiet = await mx(zone);
    await deliver(quiet, job('tlsrpt@sts.example', { attributes: { tlsReport: true } }));
    expect(quiet.events).toEqual([]);
    const other = await mx(zone);
    await deliver(other, job('tlsrpt@sts.example'));
    expect(seen(other.events)).toEqual([
      ['sts.example', 'sts', 'certificate-not-trusted', 'mx1.sts.example'],
    ]);
  });
});

describe('through the queue', () => {
  it('`queue show` names the policy behind a TLS deferral; a REQUIRETLS bounce (5.7.30) is not retried', async () => {
    const r = await remote('127.0.0.2', certs['expired'] as TestCertificate);
    policyHost.set('mta-sts.sts.example', { body: stsPolicy('enforce', ['mx1.sts.example']) });
    const zone: Zone = {
      ...stsDomain('sts.example', '127.0.0.2'),
      'plain.example': { MX: [{ exchange: 'mx.plain.example', preference: 10 }] },
      'mx.plain.example': { A: ['127.0.0.2'] },
    };
    const s = await mx(await dns(zone), {}, { more: [{ plugin: 'queue-fs' }] });
    const queue = s.server.registry.service('queue') as QueueService;
    const message = (to: string, requireTls: boolean) =>
      queue.enqueue(
        {
          from: '',
          recipients: [{ address: to, domain: to.slice(to.indexOf('@') + 1), attributes: {} }],
          attributes: requireTls ? { requireTls: true } : {},
          receivedAt: Date.now(),
        },
        Buffer.from(MESSAGE),
      );
    const deferred = await message('bob@sts.example', false);
    await message('bob@plain.example', true);
    await queue.runDue();
    // The REQUIRETLS message failed for good (null sender: no bounce to send); the other waits.
    expect((await queue.list()).map((m) => m.id)).toEqual([deferred]);
    expect(r.received).toHaveLength(0);
    const configFile = join(s.dataDir, 'mailframe.json');
    await writeFile(configFile, JSON.stringify({ dataDir: s.dataDir, plugins: [{ plugin: 'queue-fs' }] }));
    let out = '';
    const code = await runQueueCli(['show', deferred], configFile, { out: (t) => (out += t), err: () => {} });
    expect(code).toBe(0);
    expect(out).toMatch(/bob@sts\.example.*451 4\.7\.5 .*\(TLS policy mta-sts\/enforce\)/);
    // The log names the policy and the failure.
    expect(s.logs).toContainEqual(
      expect.objectContaining({
        msg: 'mail exchanger not usable, trying the next',
        mx: 'mx1.sts.example',
        tlsPolicy: 'mta-sts/enforce',
        tlsFailure: 'certificate-expired',
      }),
    );
  });
});
