/**
 * Where mail for a destination goes (RFC 5321 5.1): the MX records sorted by
 * preference (random order among equals), the implicit MX when there are
 * none, RFC 7505 null MX, and the loop rule (this host and every less
 * preferred exchanger are left out). Addresses of each exchanger are looked
 * up when it is tried (`addressesOf`), in the configured family order.
 *
 * Outcomes are values: a list of exchangers, or a reply that fails or defers
 * every recipient of the destination.
 */
import { isIP } from 'node:net';
import type { DnsResolver, DnsResult } from '../../core/dns/types.ts';
import type { Reply } from '../../core/reply.ts';
import { MxReplies as R } from './replies.ts';

/** One mail exchanger to try, in order. */
export interface Exchanger {
  /** Host name (lower case, no trailing dot), or the address itself for a literal. */
  readonly name: string;
  readonly preference: number;
  /** Known up front for an address literal; otherwise looked up when tried. */
  readonly addresses?: readonly string[];
}

export type Resolution =
  | {
      readonly kind: 'exchangers';
      readonly exchangers: readonly Exchanger[];
      readonly implicit: boolean;
      /** The MX lookup was DNSSEC-authenticated (trusted AD bit): DANE may apply (RFC 7672 2.2.1). */
      readonly authenticated: boolean;
    }
  | { readonly kind: 'fail'; readonly status: 'failed' | 'deferred'; readonly reply: Reply };

export type AddressFamily = 'ipv4' | 'ipv6';

export interface ResolveOptions {
  readonly dns: DnsResolver;
  /** Names of this host (lower case, no trailing dot): an MX naming one of them is a loop. */
  readonly localNames: ReadonlySet<string>;
  /** Deliver to address literals (`user@[192.0.2.1]`). */
  readonly literals: boolean;
  /** Random order among equal preferences; injectable for tests. */
  readonly random?: () => number;
}

const fail = (status: 'failed' | 'deferred', reply: Reply): Resolution => ({ kind: 'fail', status, reply });

/** Lower case, without the trailing dot. */
export function normalName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** The exchangers for `destination` (ASCII, lower case domain, or an address literal in brackets). */
export async function resolveDestination(destination: string, o: ResolveOptions): Promise<Resolution> {
  if (destination.startsWith('[')) return literal(destination, o.literals);
  const domain = normalName(destination);
  const mx = await o.dns.lookup(domain, 'MX');
  switch (mx.kind) {
    case 'error':
      return fail('deferred', R.dnsTemporary(domain, 'MX', mx.reason));
    case 'nxdomain':
      return fail('failed', R.noSuchDomain(domain));
    case 'nodata':
      // RFC 5321 5.1: no MX records, the domain itself is the implicit MX (its A/AAAA are looked up when tried).
      if (o.localNames.has(domain)) return fail('failed', R.loopsBack(domain));
      return {
        kind: 'exchangers',
        exchangers: [{ name: domain, preference: 0 }],
        implicit: true,
        authenticated: mx.authenticated,
      };
    case 'answer':
      break;
  }
  // RFC 7505: a null MX (exchange ".") says the domain takes no mail.
  if (mx.records.some((r) => r.exchange === '' || r.exchange === '.'))
    return fail('failed', R.nullMx(domain));
  const sorted = sortByPreference(
    mx.records.map((r) => ({ name: normalName(r.exchange), preference: r.preference })),
    o.random ?? Math.random,
  );
  // RFC 5321 5.1: when this host is in the list, only the more preferred exchangers may be tried.
  const self = sorted.find((e) => o.localNames.has(e.name));
  const usable = self === undefined ? sorted : sorted.filter((e) => e.preference < self.preference);
  if (usable.length === 0) return fail('failed', R.loopsBack(domain));
  return { kind: 'exchangers', exchangers: usable, implicit: false, authenticated: mx.authenticated };
}

/** Ascending preference; equal preferences shuffled (RFC 5321 5.1 spreads the load among them). */
function sortByPreference(list: readonly Exchanger[], random: () => number): Exchanger[] {
  const keyed = list.map((e) => ({ e, k: random() }));
  keyed.sort((a, b) => a.e.preference - b.e.preference || a.k - b.k);
  return keyed.map((x) => x.e);
}

function literal(destination: string, enabled: boolean): Resolution {
  if (!enabled) return fail('failed', R.literalsDisabled(destination));
  const inner = destination.slice(1, -1);
  const address = /^ipv6:/i.test(inner) ? inner.slice(5) : inner;
  if (isIP(address) === 0) return fail('failed', R.badLiteral(destination));
  return {
    kind: 'exchangers',
    exchangers: [{ name: address, preference: 0, addresses: [address] }],
    implicit: true,
    authenticated: false,
  };
}

/** What looking up an exchanger's addresses found. */
export type Addresses =
  | { readonly kind: 'addresses'; readonly addresses: readonly string[] }
  | { readonly kind: 'none' }
  | { readonly kind: 'error'; readonly reply: Reply };

/** The exchanger's addresses, families in the order given; a temporary failure only when nothing was found. */
export async function addressesOf(
  exchanger: Exchanger,
  families: readonly AddressFamily[],
  dns: DnsResolver,
): Promise<Addresses> {
  if (exchanger.addresses) return { kind: 'addresses', addresses: exchanger.addresses };
  const results = await Promise.all(
    families.map(
      (f) => dns.lookup(exchanger.name, f === 'ipv4' ? 'A' : 'AAAA') as Promise<DnsResult<string>>,
    ),
  );
  const addresses: string[] = [];
  let error: Reply | undefined;
  results.forEach((r, i) => {
    if (r.kind === 'answer') addresses.push(...r.records);
    else if (r.kind === 'error')
      error ??= R.dnsTemporary(exchanger.name, families[i] === 'ipv4' ? 'A' : 'AAAA', r.reason);
  });
  if (addresses.length > 0) return { kind: 'addresses', addresses };
  return error ? { kind: 'error', reply: error } : { kind: 'none' };
}
