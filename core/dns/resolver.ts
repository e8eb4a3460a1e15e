/**
 * The DNS resolver service: a stub resolver that sends its own queries to the
 * configured recursive servers (UDP, then TCP when the answer is truncated),
 * keeps answers in a bounded cache for their TTL, and caches negative answers
 * (RFC 2308). One per server instance; time comes from the server's clock.
 *
 * Failures: a timeout or a network error is retried on the next server, round
 * after round (`attempts` rounds); a server that answers SERVFAIL, REFUSED or
 * FORMERR is not asked again in the same lookup. The lookup then reports the
 * most telling failure seen (a server's answer before a timeout). Failures are
 * remembered for `errorTtl` seconds (RFC 2308 7: at most five minutes) so a
 * burst of lookups for a broken name does not wait out each timeout again.
 */
import { randomInt } from 'node:crypto';
import { domainToASCII } from 'node:url';
import dnsPacket, { type Answer, type DecodedPacket, type OptAnswer, type RecordType } from 'dns-packet';
import type { Logger } from 'pino';
import type { Clock } from '../plugin.ts';
import { TtlCache } from './cache.ts';
import { formatNameServer, type NameServer } from './servers.ts';
import { comparableName, encodeQuery, exchangeTcp, exchangeUdp, type Outcome } from './transport.ts';
import type { DnsErrorReason, DnsRecordType, DnsRecordTypes, DnsResolver, DnsResult } from './types.ts';

export interface ResolverOptions {
  readonly servers: readonly NameServer[];
  readonly clock: Clock;
  /** Milliseconds to wait for one server's answer to one query. */
  readonly timeout: number;
  /** Rounds over the server list before giving up. */
  readonly attempts: number;
  /** Cache entries (0: no cache). */
  readonly cacheSize: number;
  /** Seconds: floor and cap on how long an answer is cached. */
  readonly minTtl: number;
  readonly maxTtl: number;
  /** Seconds: cap on how long a negative answer (NXDOMAIN, NODATA) is cached. */
  readonly negativeTtl: number;
  /** Seconds a failure (SERVFAIL, REFUSED, timeout) is remembered; 0: not at all. */
  readonly errorTtl: number;
  /** Believe the AD bit (the servers are validating resolvers the operator trusts, on a trusted path). */
  readonly trustAd: boolean;
  /** Where failed queries are logged (at debug: one line per server that failed to answer). */
  readonly log?: Logger;
}

/** CNAME hops followed inside one answer (BIND and Unbound stop at a dozen or so). */
const MAX_CNAME_HOPS = 8;
/** The EDNS UDP payload size the DNS flag day 2020 recommends. */
const EDNS_PAYLOAD = 1232;
const RCODE_NOERROR = 0;
const RCODE_FORMERR = 1;
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;
const RCODE_REFUSED = 5;
/** Which failure to report when several were seen: a server's own answer says more than silence. */
const FAILURE_RANK: readonly DnsErrorReason[] = ['servfail', 'refused', 'format', 'timeout', 'network'];

type AnyResult = DnsResult<DnsRecordTypes[DnsRecordType]>;

export class StubResolver implements DnsResolver {
  readonly #opts: ResolverOptions;
  readonly #cache: TtlCache<AnyResult>;
  readonly #inflight = new Map<string, Promise<AnyResult>>();
  readonly #closing = new AbortController();

  constructor(opts: ResolverOptions) {
    this.#opts = opts;
    this.#cache = new TtlCache(opts.cacheSize);
  }

  lookup<T extends DnsRecordType>(name: string, type: T): Promise<DnsResult<DnsRecordTypes[T]>> {
    return this.#lookup(name, type) as Promise<DnsResult<DnsRecordTypes[T]>>;
  }

  cached<T extends DnsRecordType>(name: string, type: T): DnsResult<DnsRecordTypes[T]> | undefined {
    return this.#cached(normaliseName(name), type) as DnsResult<DnsRecordTypes[T]> | undefined;
  }

  /** The answer for the normalised `qname` from the cache, if it is there. */
  #cached(qname: string | undefined, type: DnsRecordType): AnyResult | undefined {
    // A name that cannot be written in DNS cannot exist there.
    if (qname === undefined) return NO_SUCH_NAME;
    const now = this.#opts.clock.now();
    const hit = this.#cache.get(`${type} ${qname}`, now);
    if (hit === undefined) return undefined;
    return hit.value.kind === 'answer' ? { ...hit.value, ttl: secondsLeft(hit.expires, now) } : hit.value;
  }

  /** Give up on lookups in flight (they answer `network` errors) and forget the cache. */
  close(): void {
    this.#closing.abort();
    this.#cache.clear();
  }

  async #lookup(name: string, type: DnsRecordType): Promise<AnyResult> {
    const qname = normaliseName(name);
    const hit = this.#cached(qname, type);
    if (hit !== undefined || qname === undefined) return hit ?? NO_SUCH_NAME;
    const key = `${type} ${qname}`;
    const pending = this.#inflight.get(key);
    if (pending) return pending;
    const started = this.#resolve(qname, type)
      .catch((err: unknown) => {
        // Nothing here should throw (answers are values); if the codec does, it is still a failed lookup.
        this.#opts.log?.warn({ err, name: qname, type }, 'dns lookup failed unexpectedly');
        return { result: { kind: 'error', reason: 'format' } as const, ttl: 0 };
      })
      .then(({ result, ttl }) => {
        if (ttl > 0 && !this.#closing.signal.aborted) {
          this.#cache.set(key, result, this.#opts.clock.now() + ttl * 1000);
        }
        return result;
      })
      .finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, started);
    return started;
  }

  /** Ask the servers in turn; the result and the seconds it may be cached. */
  async #resolve(qname: string, type: DnsRecordType): Promise<{ result: AnyResult; ttl: number }> {
    const { servers, attempts } = this.#opts;
    const failures = new Set<DnsErrorReason>();
    const answered = new Set<number>();
    for (let round = 0; round < attempts && answered.size < servers.length; round++) {
      for (const [index, server] of servers.entries()) {
        if (answered.has(index)) continue;
        if (this.#closing.signal.aborted) return { result: { kind: 'error', reason: 'network' }, ttl: 0 };
        const outcome = await this.#ask(server, qname, type);
        let failure: DnsErrorReason;
        if (outcome.kind !== 'response') {
          failure = outcome.kind;
        } else {
          const rcode = (outcome.message.flags ?? 0) & 0x0f;
          if (rcode === RCODE_NOERROR || rcode === RCODE_NXDOMAIN) {
            return this.#interpret(outcome.message, qname, type, rcode === RCODE_NXDOMAIN);
          }
          answered.add(index);
          failure = rcode === RCODE_SERVFAIL ? 'servfail' : rcode === RCODE_REFUSED ? 'refused' : 'format';
        }
        failures.add(failure);
        this.#opts.log?.debug(
          { server: formatNameServer(server), name: qname, type, failure },
          'dns query failed',
        );
      }
    }
    const reason = FAILURE_RANK.find((r) => failures.has(r)) ?? 'network';
    return { result: { kind: 'error', reason }, ttl: this.#opts.errorTtl };
  }

  /** One server: UDP with EDNS, without EDNS if it says FORMERR, TCP if the answer was truncated. */
  async #ask(server: NameServer, qname: string, type: DnsRecordType): Promise<Outcome> {
    const { timeout, trustAd } = this.#opts;
    const signal = this.#closing.signal;
    const build = (edns: boolean) =>
      encodeQuery(
        {
          type: 'query',
          id: randomInt(0, 65536),
          // RD: we are a stub; AD: we understand it (RFC 6840 5.7), so a validator may set it in the reply.
          flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
          questions: [{ type: type as RecordType, name: qname === '' ? '.' : qname, class: 'IN' }],
          additionals: edns
            ? [
                {
                  type: 'OPT',
                  name: '.',
                  udpPayloadSize: EDNS_PAYLOAD,
                  extendedRcode: 0,
                  ednsVersion: 0,
                  // DO only when the AD bit will be believed: otherwise the signatures are dead weight.
                  flags: trustAd ? dnsPacket.DNSSEC_OK : 0,
                  flag_do: trustAd,
                  options: [],
                },
              ]
            : [],
        },
        qname,
        type,
      );
    let query = build(true);
    let outcome = await exchangeUdp(server, query, timeout, signal);
    if (outcome.kind === 'response' && ((outcome.message.flags ?? 0) & 0x0f) === RCODE_FORMERR) {
      // An old server that does not speak EDNS (RFC 6891 7): ask again without it.
      query = build(false);
      outcome = await exchangeUdp(server, query, timeout, signal);
    }
    if (outcome.kind === 'response' && outcome.message.flag_tc) {
      outcome = await exchangeTcp(server, query, timeout, signal);
    }
    return outcome;
  }

  #interpret(
    message: DecodedPacket,
    qname: string,
    type: DnsRecordType,
    nxdomain: boolean,
  ): { result: AnyResult; ttl: number } {
    const authenticated = this.#opts.trustAd && message.flag_ad;
    const answers = (message.answers ?? []).filter(
      (a): a is Exclude<Answer, OptAnswer> => a.type !== 'OPT' && (a.class ?? 'IN') === 'IN',
    );
    let owner = qname;
    let ttl = Number.POSITIVE_INFINITY;
    if (type !== 'CNAME') {
      const seen = new Set([owner]);
      for (let hops = 0; ; hops++) {
        const alias = answers.find((a) => a.type === 'CNAME' && comparableName(a.name) === owner);
        if (!alias) break;
        const target = comparableName(String(alias.data));
        // A chain too long or going round in circles is a broken zone: a temporary failure, as a resolver says SERVFAIL.
        if (hops >= MAX_CNAME_HOPS || seen.has(target)) return this.#failure('servfail');
        seen.add(target);
        ttl = Math.min(ttl, alias.ttl ?? 0);
        owner = target;
      }
    }
    const records: Array<DnsRecordTypes[DnsRecordType]> = [];
    for (const a of answers) {
      if (a.type !== type || comparableName(a.name) !== owner) continue;
      const record = toRecord(a);
      if (record === undefined) continue;
      records.push(record);
      ttl = Math.min(ttl, a.ttl ?? 0);
    }
    if (records.length > 0) {
      const { minTtl, maxTtl } = this.#opts;
      const kept = Math.min(Math.max(ttl, minTtl), maxTtl);
      // Frozen: the same answer goes to every caller and stays in the cache.
      const result = {
        kind: 'answer',
        records: Object.freeze(records),
        ttl: kept,
        authenticated,
        canonicalName: owner,
      } as const;
      return { result: Object.freeze(result), ttl: kept };
    }
    const negative = this.#negativeTtl(message);
    return {
      result: nxdomain ? { kind: 'nxdomain', authenticated } : { kind: 'nodata', authenticated },
      // Never longer than a CNAME that led here.
      ttl: Math.min(negative, ttl),
    };
  }

  /** RFC 2308 5: the SOA's own TTL or its MINIMUM field, whichever is less; no SOA, no caching. */
  #negativeTtl(message: DecodedPacket): number {
    const soa = (message.authorities ?? []).find((a) => a.type === 'SOA');
    if (soa?.type !== 'SOA') return 0;
    const ttl = Math.min(soa.ttl ?? 0, soa.data.minimum ?? 0);
    return Math.min(Math.max(ttl, this.#opts.minTtl), this.#opts.negativeTtl);
  }

  #failure(reason: DnsErrorReason): { result: AnyResult; ttl: number } {
    return { result: { kind: 'error', reason }, ttl: this.#opts.errorTtl };
  }
}

/** The record's value in the contract's shape; `undefined` for data the codec could not read. */
function toRecord(a: Answer): DnsRecordTypes[DnsRecordType] | undefined {
  switch (a.type) {
    case 'A':
    case 'AAAA':
      return a.data;
    case 'CNAME':
    case 'PTR':
      return comparableName(a.data);
    case 'MX':
      // The null MX's exchange is the root, "." (RFC 7505): '' here.
      return Object.freeze({ exchange: comparableName(a.data.exchange), preference: a.data.preference ?? 0 });
    case 'TXT': {
      const parts = Array.isArray(a.data) ? a.data : [a.data];
      return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p))).toString('utf8');
    }
    case 'TLSA':
      return {
        usage: a.data.usage,
        selector: a.data.selector,
        matchingType: a.data.matchingType,
        data: new Uint8Array(a.data.certificate),
      };
    default:
      return undefined;
  }
}

const NO_SUCH_NAME: AnyResult = Object.freeze({ kind: 'nxdomain', authenticated: false });

function secondsLeft(expires: number, now: number): number {
  return Math.max(0, Math.ceil((expires - now) / 1000));
}

/**
 * The name as queried: lower case, no trailing dot, IDNs converted to A-labels;
 * `undefined` when it cannot be a DNS name (empty label, label over 63 octets,
 * name over 253).
 */
function normaliseName(name: string): string | undefined {
  let n = comparableName(name);
  if (/[^\x00-\x7f]/.test(n)) {
    n = domainToASCII(n);
    if (n === '') return undefined;
  }
  if (n === '') return '';
  if (n.length > 253) return undefined;
  for (const label of n.split('.')) {
    if (label.length === 0 || label.length > 63) return undefined;
  }
  return n;
}
