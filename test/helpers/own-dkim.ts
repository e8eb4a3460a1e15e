/** Verify a message's DKIM signatures with dkim-verify's library against a test DNS server's keys. */

import { StubResolver } from '../../core/dns/resolver.ts';
import { parseNameServer } from '../../core/dns/servers.ts';
import type { Clock } from '../../core/plugin.ts';
import type { TestDnsServer } from '../../core/testkit-dns.ts';
import { KeyCache, type Verification, verifyMessage } from '../../plugins/dkim/verify.ts';

export async function ownVerify(message: Buffer, dns: TestDnsServer, clock: Clock): Promise<Verification> {
  const server = parseNameServer(dns.address);
  if (!server) throw new Error(`bad test DNS address ${dns.address}`);
  const resolver = new StubResolver({
    servers: [server],
    clock,
    timeout: 2000,
    attempts: 2,
    cacheSize: 0,
    minTtl: 0,
    maxTtl: 60,
    negativeTtl: 0,
    errorTtl: 0,
    trustAd: false,
  });
  try {
    return await verifyMessage(message, {
      lookup: (name) => resolver.lookup(name, 'TXT'),
      now: clock.now(),
      minKeyBits: 1024,
      maxSignatures: 5,
      clockSkew: 300,
      keys: new KeyCache(10),
    });
  } finally {
    resolver.close();
  }
}
