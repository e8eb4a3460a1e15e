/**
 * The server's DNS resolver against a real authoritative server on loopback
 * (the testkit's), over UDP and TCP sockets: record types, negative answers,
 * CNAME chains, the cache on the injected clock, failover and anti-spoofing.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import Type from 'typebox';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Clock,
  type DnsResolver,
  definePlugin,
  MailframeError,
  MailServer,
  reply,
} from '../../core/index.ts';
import {
  startTestDnsServer,
  startTestServer,
  type TestDnsServer,
  type TestDnsZone,
  type TestServer,
} from '../../core/testkit.ts';

const HAVE_IPV6_LOOPBACK = Object.values(networkInterfaces()).some((list) =>
  list?.some((i) => i.address === '::1'),
);

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

describe('negative answers', () => {
  it('tells a name without records of the type (nodata) from a name that does not exist (nxdomain)', async () => {
    const { resolver } = await resolverOf(zone);
    expect(await resolver.lookup('example.test', 'PTR')).toEqual({ kind: 'nodata', authenticated: false });
    expect(await resolver.lookup('missing.example.test', 'A')).toEqual({
      kind: 'nxdomain',
      authenticated: false,
    });
    // A name that only has names under it exists (an empty non-terminal).
    expect(await resolver.lookup('_tcp.mx1.example.test', 'TXT')).toEqual({
      kind: 'nodata',
      authenticated: false,
    });
  });

  it('serves a wildcard only below its closest encloser, never for names that exist (RFC 4592)', async () => {
    const { resolver } = await resolverOf({
      '*.list.test': { A: ['127.0.0.2'] },
      'host.b.list.test': { A: ['192.0.2.1'] },
      'c.list.test': { TXT: ['here'] },
    });
    const a = async (name: string) => {
      const r = await resolver.lookup(name, 'A');
      return r.kind === 'answer' ? r.records : r.kind;
    };
    expect(await a('x.list.test')).toEqual(['127.0.0.2']);
    expect(await a('x.y.list.test')).toEqual(['127.0.0.2']);
    // b.list.test exists (an empty non-terminal) and c.list.test has records: the wildcard is not theirs ...
    expect(await a('b.list.test')).toBe('nodata');
    expect(await a('c.list.test')).toBe('nodata');
    // ... nor is it for names under them (their closest encloser has no wildcard).
    expect(await a('x.b.list.test')).toBe('nxdomain');
    expect(await a('x.c.list.test')).toBe('nxdomain');
  });

  it('answers nxdomain for a name that cannot exist, without asking', async () => {
    const dns = await dnsServer(zone);
    const { resolver } = await resolverOf(dns);
    expect(await resolver.lookup(`${'a'.repeat(64)}.example.test`, 'A')).toEqual({
      kind: 'nxdomain',
      authenticated: false,
    });
    expect(await resolver.lookup('a..example.test', 'MX')).toMatchObject({ kind: 'nxdomain' });
    expect(dns.queries).toHaveLength(0);
  });
});

describe('CNAME', () => {
  it('follows a chain inside the answer to the canonical name; the TTL is the smallest on the way', async () => {
    const { resolver } = await resolverOf(zone);
    expect(await resolver.lookup('Alias.Example.Test', 'A')).toEqual({
      kind: 'answer',
      records: ['192.0.2.1'],
      ttl: 60,
      authenticated: false,
      canonicalName: 'example.test',
    });
    const mx = await resolver.lookup('alias.example.test', 'MX');
    expect(mx.kind === 'answer' && mx.records.map((r) => r.exchange)).toEqual([
      'mx1.example.test',
      'mx2.example.test',
    ]);
  });

  it('an alias to a missing name is nxdomain, to a name without the type nodata', async () => {
    const { resolver } = await resolverOf({
      ...zone,
      'dangling.example.test': { CNAME: 'gone.example.test' },
    });
    expect(await resolver.lookup('dangling.example.test', 'A')).toMatchObject({ kind: 'nxdomain' });
    expect(await resolver.lookup('alias.example.test', 'PTR')).toMatchObject({ kind: 'nodata' });
  });

  it('a chain that loops is a temporary failure, not an endless walk', async () => {
    const { resolver } = await resolverOf({
      'loop1.example.test': { CNAME: 'loop2.example.test' },
      'loop2.example.test': { CNAME: 'loop1.example.test' },
    });
    expect(await resolver.lookup('loop1.example.test', 'A')).toEqual({ kind: 'error', reason: 'servfail' });
  });
});

describe('cache', () => {
  it('answers from the cache within the TTL and asks again once the clock passes it', async () => {
    const clock = new ManualClock();
    const dns = await dnsServer({ 'ttl.example.test': { A: ['192.0.2.10'], ttl: 30 } });
    const { resolver } = await resolverOf(dns, {}, clock);
    expect(await resolver.lookup('ttl.example.test', 'A')).toMatchObject({
      records: ['192.0.2.10'],
      ttl: 30,
    });
    clock.advance(20);
    // From the cache: no query, and the TTL left is what remains of it.
    expect(await resolver.lookup('TTL.example.test.', 'A')).toMatchObject({
      records: ['192.0.2.10'],
      ttl: 10,
    });
    expect(dns.count('ttl.example.test', 'A')).toBe(1);
    dns.set('ttl.example.test', { A: ['192.0.2.11'], ttl: 30 });
    clock.advance(10);
    expect(await resolver.lookup('ttl.example.test', 'A')).toMatchObject({
      records: ['192.0.2.11'],
      ttl: 30,
    });
    expect(dns.count('ttl.example.test', 'A')).toBe(2);
  });

  it('cached() answers at once what lookup() would answer from the cache, and nothing it would have to ask for', async () => {
    const clock = new ManualClock();
    const dns = await dnsServer({ 'ttl.example.test': { A: ['192.0.2.10'], ttl: 30 } });
    const { resolver } = await resolverOf(dns, {}, clock);
    const cached = resolver.cached?.bind(resolver);
    if (cached === undefined) throw new Error('the server resolver has no cached()');
    // Not asked yet: nothing, and no query sent.
    expect(cached('ttl.example.test', 'A')).toBeUndefined();
    expect(dns.count('ttl.example.test', 'A')).toBe(0);
    await resolver.lookup('ttl.example.test', 'A');
    clock.advance(20);
    // The same name however written, with the TTL left; another type is not the same answer.
    expect(cached('TTL.example.test.', 'A')).toMatchObject({
      kind: 'answer',
      records: ['192.0.2.10'],
      ttl: 10,
    });
    expect(cached('ttl.example.test', 'AAAA')).toBeUndefined();
    // Once the TTL passed, it is gone: the record may have changed.
    dns.set('ttl.example.test', { A: ['192.0.2.11'], ttl: 30 });
    clock.advance(10);
    expect(cached('ttl.example.test', 'A')).toBeUndefined();
    expect(await resolver.lookup('ttl.example.test', 'A')).toMatchObject({ records: ['192.0.2.11'] });
    expect(cached('ttl.example.test', 'A')).toMatchObject({ records: ['192.0.2.11'], ttl: 30 });
    // A name that cannot exist is nxdomain without asking, as lookup() answers it.
    expect(cached(`${'a'.repeat(64)}.example.test`, 'A')).toEqual({ kind: 'nxdomain', authenticated: false });
    expect(dns.count('ttl.example.test', 'A')).toBe(2);
  });

  it('keeps answers at least minTtl and at most maxTtl seconds', async () => {
    const clock = new ManualClock();
    const dns = await dnsServer({
      'short.example.test': { A: ['192.0.2.1'], ttl: 1 },
      'long.example.test': { A: ['192.0.2.2'], ttl: 86400 },
    });
    const { resolver } = await resolverOf(dns, { minTtl: 60, maxTtl: 600 }, clock);
    expect(await resolver.lookup('short.example.test', 'A')).toMatchObject({ ttl: 60 });
    expect(await resolver.lookup('long.example.test', 'A')).toMatchObject({ ttl: 600 });
    clock.advance(59);
    await resolver.lookup('short.example.test', 'A');
    expect(dns.count('short.example.test')).toBe(1);
    clock.advance(600 - 59);
    await resolver.lookup('long.example.test', 'A');
    expect(dns.count('long.example.test')).toBe(2);
  });

  it('caches negative answers for the SOA TTL or MINIMUM, whichever is less, capped by negativeTtl (RFC 2308)', async () => {
    const clock = new ManualClock();
    const dns = await dnsServer({
      'neg.test': { SOA: { ttl: 600, minimum: 120 } },
      'host.neg.test': { A: ['192.0.2.3'] },
      'capped.test': { SOA: { ttl: 3600, minimum: 3600 } },
    });
    const { resolver } = await resolverOf(dns, { negativeTtl: 300 }, clock);
    await resolver.lookup('nothing.neg.test', 'A');
    await resolver.lookup('host.neg.test', 'MX');
    clock.advance(119);
    expect(await resolver.lookup('nothing.neg.test', 'A')).toMatchObject({ kind: 'nxdomain' });
    expect(await resolver.lookup('host.neg.test', 'MX')).toMatchObject({ kind: 'nodata' });
    expect(dns.count('nothing.neg.test')).toBe(1);
    expect(dns.count('host.neg.test')).toBe(1);
    clock.advance(1);
    await resolver.lookup('nothing.neg.test', 'A');
    await resolver.lookup('host.neg.test', 'MX');
    expect(dns.count('nothing.neg.test')).toBe(2);
    expect(dns.count('host.neg.test')).toBe(2);

    await resolver.lookup('nothing.capped.test', 'A');
    clock.advance(299);
    await resolver.lookup('nothing.capped.test', 'A');
    expect(dns.count('nothing.capped.test')).toBe(1);
    clock.advance(1);
    await resolver.lookup('nothing.capped.test', 'A');
    expect(dns.count('nothing.capped.test')).toBe(2);
  });

  it('does not cache a negative answer without an SOA', async () => {
    const dns = await startTestDnsServer({ 'a.test': { A: ['192.0.2.1'] } }, { soa: false });
    cleanups.push(() => dns.close());
    const { resolver } = await resolverOf(dns);
    await resolver.lookup('b.test', 'A');
    await resolver.lookup('b.test', 'A');
    expect(dns.count('b.test')).toBe(2);
  });

  it('sends one query for concurrent identical lookups', async () => {
    const dns = await dnsServer(zone);
    const { resolver } = await resolverOf(dns, { cacheSize: 0 });
    const results = await Promise.all(
      Array.from({ length: 10 }, () => resolver.lookup('example.test', 'MX')),
    );
    expect(new Set(results.map((r) => JSON.stringify(r))).size).toBe(1);
    expect(results[0]?.kind).toBe('answer');
    expect(dns.count('example.test', 'MX')).toBe(1);
    // With the cache off, a later lookup asks again.
    await resolver.lookup('example.test', 'MX');
    expect(dns.count('example.test', 'MX')).toBe(2);
  });

  it('holds at most cacheSize answers, dropping the least recently used', async () => {
    const names: Record<string, { A: string[] }> = {};
    for (const n of ['a', 'b', 'c']) names[`${n}.example.test`] = { A: ['192.0.2.1'] };
    const dns = await dnsServer(names);
    const { resolver } = await resolverOf(dns, { cacheSize: 2 });
    await resolver.lookup('a.example.test', 'A');
    await resolver.lookup('b.example.test', 'A');
    await resolver.lookup('a.example.test', 'A'); // a is now the most recently used
    await resolver.lookup('c.example.test', 'A'); // evicts b
    expect(dns.queries).toHaveLength(3);
    await resolver.lookup('a.example.test', 'A');
    await resolver.lookup('c.example.test', 'A');
    expect(dns.queries).toHaveLength(3);
    await resolver.lookup('b.example.test', 'A');
    expect(dns.count('b.example.test')).toBe(2);
  });

  it('keeps A and MX answers for one name apart', async () => {
    const dns = await dnsServer(zone);
    const { resolver } = await resolverOf(dns);
    await resolver.lookup('example.test', 'A');
    expect((await resolver.lookup('example.test', 'MX')).kind).toBe('answer');
    expect(dns.count('example.test', 'MX')).toBe(1);
  });
});

describe('transport', () => {
  it('asks again over TCP when the UDP answer is truncated', async () => {
    const txt = Array.from({ length: 20 }, (_, i) => `record ${i} ${'x'.repeat(200)}`);
    const dns = await dnsServer({ 'big.example.test': { TXT: txt, truncate: true } });
    const { resolver } = await resolverOf(dns);
    const r = await resolver.lookup('big.example.test', 'TXT');
    expect(r.kind === 'answer' && [...r.records].sort()).toEqual([...txt].sort());
    expect(dns.queries.map((q) => q.transport)).toEqual(['udp', 'tcp']);
  });

  it('sends RD and AD (RFC 6840 5.7) with random ids, and no DO bit unless the servers are trusted', async () => {
    const dns = await dnsServer(zone);
    const { resolver } = await resolverOf(dns, { cacheSize: 0 });
    for (let i = 0; i < 8; i++) await resolver.lookup('example.test', 'A');
    expect(dns.queries.every((q) => q.recursionDesired && q.authenticatedData && !q.dnssecOk)).toBe(true);
    expect(new Set(dns.queries.map((q) => q.id)).size).toBeGreaterThan(1);
  });

  it('ignores forged answers: a wrong id, a wrong question, another source port', async () => {
    const dns = await dnsServer({ 'target.example.test': { A: ['192.0.2.7'], spoof: true } });
    const { resolver } = await resolverOf(dns);
    const r = await resolver.lookup('target.example.test', 'A');
    expect(r).toMatchObject({ kind: 'answer', records: ['192.0.2.7'] });
  });

  it.skipIf(!HAVE_IPV6_LOOPBACK)('asks a server on an IPv6 address, over UDP and TCP', async () => {
    const dns = await startTestDnsServer(
      { 'big.example.test': { TXT: ['x'.repeat(300)], truncate: true }, ...zone },
      { host: '::1' },
    );
    cleanups.push(() => dns.close());
    expect(dns.address).toBe(`[::1]:${dns.port}`);
    const { resolver } = await resolverOf(dns);
    expect(await resolver.lookup('example.test', 'AAAA')).toMatchObject({ records: ['2001:db8::1'] });
    expect(await resolver.lookup('big.example.test', 'TXT')).toMatchObject({ records: ['x'.repeat(300)] });
    expect(dns.queries.map((q) => q.transport)).toEqual(['udp', 'udp', 'tcp']);
  });

  it('looks up internationalised names by their A-labels', async () => {
    const dns = await dnsServer({ 'xn--bcher-kva.example': { A: ['192.0.2.9'] } });
    const { resolver } = await resolverOf(dns);
    expect(await resolver.lookup('Bücher.example', 'A')).toMatchObject({
      records: ['192.0.2.9'],
      canonicalName: 'xn--bcher-kva.example',
    });
  });
});

describe('DNSSEC AD bit', () => {
  const signed: TestDnsZone = { 'signed.example.test': { A: ['192.0.2.5'], authenticated: true } };

  it('is not believed by default', async () => {
    const { resolver } = await resolverOf(signed);
    expect(await resolver.lookup('signed.example.test', 'A')).toMatchObject({ authenticated: false });
  });

  it('is believed from servers the operator trusts, which are asked with the DO bit', async () => {
    const dns = await dnsServer(signed);
    const { resolver } = await resolverOf(dns, { trustAd: true });
    expect(await resolver.lookup('signed.example.test', 'A')).toMatchObject({ authenticated: true });
    expect(await resolver.lookup('other.signed.example.test', 'A')).toMatchObject({
      kind: 'nxdomain',
      authenticated: false,
    });
    expect(dns.queries.every((q) => q.dnssecOk && q.edns)).toBe(true);
  });
});

describe('failures and failover', () => {
  it('a server that never answers is a timeout, and the next configured server is asked', async () => {
    const silent = await dnsServer({ 'example.test': { drop: true } });
    const good = await dnsServer(zone);
    const alone = await resolverOf(silent, { timeout: 100, attempts: 2 });
    expect(await alone.resolver.lookup('example.test', 'A')).toEqual({ kind: 'error', reason: 'timeout' });
    expect(silent.count('example.test')).toBe(2);
    const { resolver } = await resolverOf(silent, {
      servers: [silent.address, good.address],
      timeout: 1000,
      attempts: 1,
    });
    const a = await resolver.lookup('example.test', 'A');
    expect(a.kind === 'answer' && a.records).toEqual(['192.0.2.1']);
    expect(good.count('example.test', 'A')).toBe(1);
  });

  it('SERVFAIL and REFUSED are temporary errors; the next server is asked, the failing one not again', async () => {
    const failing = await dnsServer({
      'broken.example.test': { rcode: 'SERVFAIL' },
      'closed.example.test': { rcode: 'REFUSED' },
    });
    const alone = await resolverOf(failing, { attempts: 3 });
    expect(await alone.resolver.lookup('broken.example.test', 'MX')).toEqual({
      kind: 'error',
      reason: 'servfail',
    });
    expect(await alone.resolver.lookup('closed.example.test', 'MX')).toEqual({
      kind: 'error',
      reason: 'refused',
    });
    expect(failing.count('broken.example.test')).toBe(1);
    const good = await dnsServer({
      'broken.example.test': { MX: [{ preference: 5, exchange: 'mx.example.test' }] },
    });
    const { resolver } = await resolverOf(failing, { servers: [failing.address, good.address] });
    expect(await resolver.lookup('broken.example.test', 'MX')).toMatchObject({ kind: 'answer' });
  });

  it('remembers a failure for errorTtl seconds, then asks again', async () => {
    const clock = new ManualClock();
    const dns = await dnsServer({ 'broken.example.test': { rcode: 'SERVFAIL' } });
    const { resolver } = await resolverOf(dns, { errorTtl: 5 }, clock);
    await resolver.lookup('broken.example.test', 'A');
    clock.advance(4);
    expect(await resolver.lookup('broken.example.test', 'A')).toEqual({ kind: 'error', reason: 'servfail' });
    expect(dns.count('broken.example.test')).toBe(1);
    clock.advance(1);
    await resolver.lookup('broken.example.test', 'A');
    expect(dns.count('broken.example.test')).toBe(2);

    const uncached = await resolverOf(dns, { errorTtl: 0 }, clock);
    await uncached.resolver.lookup('broken.example.test', 'A');
    await uncached.resolver.lookup('broken.example.test', 'A');
    expect(dns.count('broken.example.test')).toBe(4);
  });

  it('a server on a closed port is a network error, and the next one is asked', async () => {
    const good = await dnsServer(zone);
    const closed = await startTestDnsServer({});
    await closed.close();
    const { resolver } = await resolverOf(good, { servers: [closed.address], timeout: 2000, attempts: 1 });
    expect(await resolver.lookup('example.test', 'A')).toEqual({ kind: 'error', reason: 'network' });
    const both = await resolverOf(good, { servers: [closed.address, good.address], timeout: 2000 });
    expect(await both.resolver.lookup('example.test', 'A')).toMatchObject({ kind: 'answer' });
  });

  it('closing the server ends lookups in flight', async () => {
    const dns = await dnsServer({ 'slow.example.test': { drop: true } });
    const t = await startTestServer({ dns, config: { dns: { timeout: 60000 } } });
    const pending = t.server.facts.dns.lookup('slow.example.test', 'A');
    await t.close();
    expect(await pending).toEqual({ kind: 'error', reason: 'network' });
  });
});

describe('configuration', () => {
  it('refuses a server that is not an IP address with an optional port, naming it by JSON pointer', async () => {
    const err = await startTestServer({
      config: { dns: { servers: ['127.0.0.1:5353', 'dns.example', '[::1]:99999'], minTtl: 10, maxTtl: 5 } },
    }).then(
      async (t) => {
        await t.close();
        throw new Error('started');
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MailframeError);
    const message = (err as MailframeError).message;
    expect(message).toContain('/dns/servers/1');
    expect(message).toContain('/dns/servers/2');
    expect(message).not.toContain('/dns/servers/0');
    expect(message).toContain('/dns/minTtl');
  });

  it('uses an injected resolver instead of its own', async () => {
    const calls: string[] = [];
    const fake: DnsResolver = {
      async lookup(name, type) {
        calls.push(`${type} ${name}`);
        return { kind: 'nxdomain', authenticated: false };
      },
    };
    const dataDir = await mkdtemp(join(tmpdir(), 'mailframe-dns-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const server = await MailServer.create({
      config: { hostname: 'mx.test.example', listeners: [{ name: 'smtp', port: 0 }], dataDir },
      dns: fake,
    });
    cleanups.push(() => server.close(0));
    expect(server.facts.dns).toBe(fake);
  });

  it('asks again without EDNS a server that answers FORMERR to EDNS queries (RFC 6891 7)', async () => {
    const dns = await startTestDnsServer(zone, { edns: false });
    cleanups.push(() => dns.close());
    const { resolver } = await resolverOf(dns);
    expect(await resolver.lookup('example.test', 'A')).toMatchObject({
      kind: 'answer',
      records: ['192.0.2.1'],
    });
    expect(dns.queries.map((q) => q.edns)).toEqual([true, false]);
  });
});

describe('plugins', () => {
  /** Accepts a recipient whose domain has MX records, as a plugin would: DNS from the server instance. */
  const mxCheck = definePlugin({
    name: 'test-mx-check',
    schema: Type.Object({}),
    register(api) {
      api.hooks.rcpt.tap(async (_tx, to) => {
        const r = await api.server.dns.lookup(to.address.asciiDomain, 'MX');
        if (r.kind === 'answer' && r.records.some((mx) => mx.exchange !== ''))
          return reply(250, '2.1.5', 'OK');
        if (r.kind === 'error') return reply(451, '4.4.3', 'Try again later');
        return reply(550, '5.1.2', 'No mail for that domain');
      });
    },
  });

  it('take the resolver from the instance, pointed at the zone given to startTestServer', async () => {
    const clock = new ManualClock();
    const t = await startTestServer({
      plugins: [mxCheck],
      clock,
      config: { dns: { timeout: 500, attempts: 2 } },
      dns: { ...zone, 'down.example.test': { drop: true } },
    });
    cleanups.push(() => t.close());
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@client.example>', 250);
    await c.expect('RCPT TO:<b@example.test>', 250, '2.1.5');
    await c.expect('RCPT TO:<c@example.test>', 250, '2.1.5');
    await c.expect('RCPT TO:<b@null.example.test>', 550, '5.1.2');
    await c.expect('RCPT TO:<b@nowhere.example.test>', 550, '5.1.2');
    await c.expect('RCPT TO:<b@down.example.test>', 451, '4.4.3');
    await c.expect('QUIT', 221);
    expect(t.dns?.count('example.test', 'MX')).toBe(1);
    clock.advance(300);
    const c2 = await t.connect();
    await c2.expect('EHLO client.example', 250);
    await c2.expect('MAIL FROM:<a@client.example>', 250);
    await c2.expect('RCPT TO:<b@example.test>', 250, '2.1.5');
    await c2.expect('QUIT', 221);
    expect(t.dns?.count('example.test', 'MX')).toBe(2);
  });

  it('the DNS server startTestServer started for a zone closes with it', async () => {
    const t = await startTestServer({ dns: zone });
    const address = t.dns?.address ?? '';
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    await t.close();
    const other = await dnsServer({});
    const { resolver } = await resolverOf(other, { servers: [address], attempts: 1, timeout: 2000 });
    expect(await resolver.lookup('example.test', 'A')).toEqual({ kind: 'error', reason: 'network' });
  });
});
