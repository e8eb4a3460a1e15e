/**
 * mailauth's resolver contract (`dns.resolve`'s: records, or an error whose
 * `code` says why not) on top of the server's DnsResolver, so DKIM key lookups
 * go through the server's resolver, its cache and the test DNS server.
 */
import type { DNSResolver } from 'mailauth';
import type { DnsRecordType, DnsResolver } from '../../core/dns/types.ts';

const TYPES = new Set<string>(['A', 'AAAA', 'MX', 'TXT', 'PTR', 'CNAME']);

function dnsError(code: string, name: string): Error {
  return Object.assign(new Error(`${code} ${name}`), { code });
}

export function mailauthResolver(dns: DnsResolver): DNSResolver {
  return async (name, type) => {
    if (!TYPES.has(type)) throw dnsError('ENOTIMP', name);
    const r = await dns.lookup(name, type as DnsRecordType);
    switch (r.kind) {
      case 'answer':
        // dns.resolveTxt gives each record as its list of character-strings; ours are joined already.
        if (type === 'TXT') return r.records.map((t) => [t as string]);
        // MX records are objects ({ exchange, priority } in dns.resolveMx); mailauth's type only names strings.
        if (type === 'MX')
          return r.records.map((m) => {
            const mx = m as { exchange: string; preference: number };
            return { exchange: mx.exchange, priority: mx.preference };
          }) as unknown as string[];
        return r.records.map((x) => x as string);
      case 'nodata':
        throw dnsError('ENODATA', name);
      case 'nxdomain':
        throw dnsError('ENOTFOUND', name);
      default:
        throw dnsError(r.reason === 'timeout' ? 'ETIMEOUT' : 'ESERVFAIL', name);
    }
  };
}
