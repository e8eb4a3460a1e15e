/**
 * The server's DNS resolver against a real authoritative server on loopback
 * (the testkit's), over UDP and TCP sockets: record types, negative answers,
 * CNAME chains, the cache on the injected clock, failover and anti-spoofing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Clock, DnsResolver } from '../../core/index.ts';
import {
  startTestDnsServer,
  startTestServer,
  type TestDnsServer,
  type TestDnsZone,
  type TestServer,
} from '../../core/testkit.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

class ManualClock implements Clock {
  t = 1_700_000_000_000;
  now(): number {
    return this.t;
  }
  advance(seconds: number): void {
    this.t += seconds * 1000;
  }
}

async function dnsServer(zone: TestDnsZone): Promise<TestDnsServer> {
  const dns = await startTestDnsServer(zone);
  cleanups.push(() => dns.close());
  return dns;
}

/** A mail server resolving with `dns` (settings over the defaults), and its resolver. */
async function resolverOf(
  dns: TestDnsServer | TestDnsZone,
  settings: Record<string, unknown> = {},
  clock: Clock = new ManualClock(),
): Promise<{ resolver: DnsResolver; t: TestServer }> {
  const t = await startTestServer({ dns, clock, config: { dns: settings } });
  cleanups.push(() => t.close());
  return { resolver: t.server.facts.dns, t };
}

const zone: TestDnsZone = {
  'example.test': {
    SOA: { ttl: 600, minimum: 120 },
    MX: [
      { preference: 10, exchange: 'mx1.example.test' },
      { preference: 20, exchange: 'MX2.Example.Test.' },
    ],
    TXT: [['v=spf1 ', 'ip4:192.0.2.0/24 ', '-all'], 'second'],
    A: ['192.0.2.1'],
    AAAA: ['2001:db8::1'],
    ttl: 300,
  },
  'null.example.test': { MX: [{ preference: 0, exchange: '' }] },
  '1.2.0.192.in-addr.arpa': { PTR: ['mx1.example.test.'] },
  '_25._tcp.mx1.example.test': {
    TLSA: [{ usage: 3, selector: 1, matchingType: 1, data: Uint8Array.from([0xde, 0xad, 0xbe, 0xef]) }],
  },
  'alias.example.test': { CNAME: 'alias2.example.test', ttl: 60 },
  'alias2.example.test': { CNAME: 'example.test', ttl: 90 },
};

describe('record types', () => {
  it('resolves A, AAAA, MX, TXT, PTR, TLSA and CNAME records', async () => {
    const { resolver } = await resolverOf(zone);
    expect(await resolver.lookup('example.test', 'A')).toEqual({
      kind: 'answer',
      records: ['192.0.2.1'],
      ttl: 300,
      authenticated: false,
      canonicalName: 'example.test',
    });
    const aaaa = await resolver.lookup('example.test', 'AAAA');
    expect(aaaa.kind === 'answer' && aaaa.records).toEqual(['2001:db8::1']);
    const mx = await resolver.lookup('Example.Test.', 'MX');
    expect(mx.kind === 'answer' && mx.records).toEqual([
      { preference: 10, exchange: 'mx1.example.test' },
      { preference: 20, exchange: 'mx2.example.test' },
    ]);
    const txt = await resolver.lookup('example.test', 'TXT');
    expect(txt.kind === 'answer' && [...txt.records].sort()).toEqual([
      'second',
      'v=spf1 ip4:192.0.2.0/24 -all',
    ]);
    const ptr = await resolver.lookup('1.2.0.192.in-addr.arpa', 'PTR');
    expect(ptr.kind === 'answer' && ptr.records).toEqual(['mx1.example.test']);
    const tlsa = await resolver.lookup('_25._tcp.mx1.example.test', 'TLSA');
    expect(tlsa.kind === 'answer' && tlsa.records).toEqual([
      { usage: 3, selector: 1, matchingType: 1, data: Uint8Array.from([0xde, 0xad, 0xbe, 0xef]) },
    ]);
    const cname = await resolver.lookup('alias.example.test', 'CNAME');
    expect(cname.kind === 'answer' && cname.records).toEqual(['alias2.example.test']);
  });

  it('reads the null MX (MX 0 .) as exchange ""', async () => {
    const { resolver } = await resolverOf(zone);
    const mx = await resolver.lookup('null.example.test', 'MX');
    expect(mx.kind === 'answer' && mx.records).toEqual([{ preference: 0, exchange: '' }]);
  });
});

describe('failures and failover', () => {
  it('a server that never answers is a timeout, and the next configured server is asked', async () => {
    const silent = await dnsServer({ 'example.test': { drop: true } });
    const good = await dnsServer(zone);
    const alone = await resolverOf(silent, { timeout: 100, attempts: 1 });
    expect(await alone.resolver.lookup('example.test', 'A')).toEqual({ kind: 'error', reason: 'timeout' });
    const { resolver } = await resolverOf(silent, {
      servers: [silent.address, good.address],
      timeout: 100,
      attempts: 1,
    });
    const a = await resolver.lookup('example.test', 'A');
    expect(a.kind === 'answer' && a.records).toEqual(['192.0.2.1']);
    expect(good.count('example.test', 'A')).toBe(1);
  });
});
