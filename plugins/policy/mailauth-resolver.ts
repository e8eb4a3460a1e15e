/**
 * The server's DNS resolver in the shape `mailauth` asks for: a function
 * `(name, rrtype)` answering like `dns.promises.resolve` (TXT as arrays of
 * character-strings, MX as `{ exchange, priority }`) and failing with the
 * `dns` module's error codes, which mailauth reads to tell SPF's void lookups
 * (`ENOTFOUND`, `ENODATA`) from temporary failures (`ETIMEOUT`, `EREFUSED`,
 * `ESERVFAIL`). Every mailauth-based check takes its DNS from here, so a
 * test's DNS server (`dns.servers`) answers all of them.
 */
import type { DnsErrorReason, DnsRecordType, DnsResolver, DnsResult } from '../../core/dns/types.ts';

/** What mailauth's `resolver` option is (`DNSResolver` in its typings). */
export type MailauthResolver = (name: string, rrtype: string) => Promise<string[][] | string[]>;

/** An error as `node:dns` raises it: `code` is what mailauth looks at. */
export class DnsLookupError extends Error {
  readonly code: string;
  readonly hostname: string;
  constructor(code: string, name: string, rrtype: string) {
    super(`query${rrtype} ${code} ${name}`);
    this.name = 'DnsLookupError';
    this.code = code;
    this.hostname = name;
  }
}

const ERROR_CODES: Record<DnsErrorReason, string> = {
  servfail: 'ESERVFAIL',
  refused: 'EREFUSED',
  timeout: 'ETIMEOUT',
  format: 'EFORMERR',
  network: 'ECONNREFUSED',
};

const SUPPORTED = new Set<string>(['A', 'AAAA', 'MX', 'TXT', 'PTR', 'CNAME']);

function records<T>(
  result: DnsResult<T>,
  name: string,
  rrtype: string,
  onTtl: ((ttl: number) => void) | undefined,
): readonly T[] {
  switch (result.kind) {
    case 'answer':
      onTtl?.(result.ttl);
      return result.records;
    case 'nodata':
      throw new DnsLookupError('ENODATA', name, rrtype);
    case 'nxdomain':
      throw new DnsLookupError('ENOTFOUND', name, rrtype);
    case 'error':
      throw new DnsLookupError(ERROR_CODES[result.reason], name, rrtype);
  }
}

/**
 * mailauth's resolver over the server's (one per server: pass `api.server.dns`).
 * `onTtl` hears the TTL of every answer with records, so a caller can keep
 * what it computed from them no longer than the records live.
 */
export function mailauthResolver(dns: DnsResolver, onTtl?: (ttl: number) => void): MailauthResolver {
  return async (name, rrtype) => {
    const type = rrtype.toUpperCase();
    if (!SUPPORTED.has(type)) throw new DnsLookupError('ENOTIMP', name, type);
    switch (type as DnsRecordType) {
      case 'TXT':
        // One record, one character-string: the service has joined them already (RFC 7208 3.3).
        return records(await dns.lookup(name, 'TXT'), name, type, onTtl).map((txt) => [txt]);
      case 'MX': {
        const mx = records(await dns.lookup(name, 'MX'), name, type, onTtl);
        // `dns.promises.resolve` shape; mailauth only reads `exchange` and `priority`.
        return mx.map((r) => ({ exchange: r.exchange, priority: r.preference })) as unknown as string[];
      }
      default:
        return [
          ...records(await dns.lookup(name, type as 'A' | 'AAAA' | 'PTR' | 'CNAME'), name, type, onTtl),
        ];
    }
  };
}
