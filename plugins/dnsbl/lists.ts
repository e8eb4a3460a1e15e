/**
 * DNS lists (RFC 5782), shared by `dnsbl` (block lists) and `dnswl` (allow
 * lists): the query name of an address in a zone (IPv4 octets reversed, IPv6
 * nibbles reversed), every zone asked in parallel through the server's
 * resolver (so answers are cached for their TTL) with a timeout per lookup,
 * answers read through the zone's return-code map, and zones that answer for
 * everything (a list that was shut down, or blocks the resolver by listing
 * the world) detected with the RFC 5782 section 5 test addresses and ignored.
 */
import { isIP } from 'node:net';
import Type, { type Static } from 'typebox';
import type { DnsResolver } from '../../core/dns/types.ts';
import type { Clock, PluginApi } from '../../core/plugin.ts';
import { normaliseIp } from '../../core/proxy-protocol.ts';
import type { Logger } from '../../core/types.ts';
import type { CheckResult } from '../policy/policy.ts';

export const ZoneSchema = Type.Object(
  {
    zone: Type.String({
      minLength: 1,
      pattern:
        '^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)+$',
      description: 'The list’s DNS zone, e.g. `zen.spamhaus.org`.',
    }),
    codes: Type.Optional(
      Type.Record(Type.String({ pattern: '^127\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}$' }), Type.String(), {
        description:
          'Return codes (A records) that count, each with its meaning (`{ "127.0.0.2": "SBL" }`); other answers are not a listing. Default: any 127.0.0.0/8 answer counts, except the refusal codes (127.255.255.0/24 and 127.0.0.255), which never do.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type ZoneConfig = Static<typeof ZoneSchema>;

/** The settings both list plugins share. */
export const listSettings = {
  zones: Type.Array(ZoneSchema, { minItems: 1, description: 'The lists to ask, all in parallel.' }),
  timeout: Type.Integer({
    minimum: 1,
    default: 5000,
    description:
      'Milliseconds one zone’s lookup may take; a zone that does not answer in time is `temperror` and the others still count.',
  }),
  probeInterval: Type.Integer({
    minimum: 0,
    default: 3600,
    description:
      'Seconds between checks that each zone still behaves (RFC 5782 section 5: 127.0.0.2 listed, 127.0.0.1 not). A zone that lists 127.0.0.1 lists everything and is ignored until a later check finds it sane. Checked at start and then when due; 0: only at start.',
  }),
  skipAuthenticated: Type.Boolean({
    default: true,
    description: 'Neither check nor refuse sessions that authenticated (AUTH).',
  }),
};

/** What a list check records for one zone (check `dnsbl` or `dnswl`). */
export interface ListResult extends CheckResult {
  /** The zone asked. */
  readonly zone: string;
  /** The return codes that made it a listing (A records of the query name). */
  readonly codes: readonly string[];
  /** Their meanings, from the zone's `codes` map. */
  readonly meanings: readonly string[];
}

/**
 * Answers that are a list refusing the query, never a listing: Spamhaus and
 * others answer 127.255.255.x (public resolver, over the limit, typo),
 * list.dnswl.org 127.0.0.255 (over its free-use limit). Read as a listing, the
 * latter would let every client past the block lists.
 */
function isRefusal(answer: string): boolean {
  return answer.startsWith('127.255.255.') || answer === '127.0.0.255';
}
/** A list that refuses us refuses every query: say so once a minute, not once a connection. */
const REFUSAL_LOG_INTERVAL_MS = 60_000;

/** The 32 hexadecimal nibbles of an IPv6 address, most significant first; `undefined` if not one. */
function ipv6Nibbles(address: string): string[] | undefined {
  if (isIP(address) !== 6) return undefined;
  let text = address.toLowerCase();
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // An embedded IPv4 tail (::ffff:192.0.2.1) becomes two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  if (groups.length !== 8) return undefined;
  return groups.flatMap((g) => g.padStart(4, '0').split(''));
}

/**
 * The labels an address is looked up under (RFC 5782 2.1 and 2.4): IPv4
 * `192.0.2.99` gives `99.2.0.192`, IPv6 the 32 nibbles in reverse order
 * separated by dots. `undefined` for something that is not an IP address.
 */
export function reversedAddress(address: string): string | undefined {
  const ip = normaliseIp(address);
  if (isIP(ip) === 4) return ip.split('.').reverse().join('.');
  return ipv6Nibbles(ip)?.reverse().join('.');
}

/** The reverse DNS name of an address: `<reversed>.in-addr.arpa` or `<nibbles>.ip6.arpa`. */
export function reverseDnsName(address: string): string | undefined {
  const ip = normaliseIp(address);
  const reversed = reversedAddress(ip);
  if (reversed === undefined) return undefined;
  return `${reversed}.${isIP(ip) === 4 ? 'in-addr.arpa' : 'ip6.arpa'}`;
}

/** Two addresses are the same (IPv6 compared in full, IPv4-mapped as IPv4). */
export function sameAddress(a: string, b: string): boolean {
  const x = normaliseIp(a);
  const y = normaliseIp(b);
  if (isIP(x) === 6 && isIP(y) === 6) return ipv6Nibbles(x)?.join('') === ipv6Nibbles(y)?.join('');
  return x === y;
}

/** `promise`, or `fallback` once `ms` milliseconds have passed. */
export function within<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

type Answer =
  | { readonly kind: 'listed'; readonly codes: readonly string[]; readonly meanings: readonly string[] }
  | { readonly kind: 'clear' }
  | { readonly kind: 'refused'; readonly codes: readonly string[] }
  | { readonly kind: 'error'; readonly reason: string };

interface ZoneState {
  readonly config: ZoneConfig;
  /** The zone answers for everything: skipped. */
  wildcard: boolean;
}

export interface DnsListsOptions {
  readonly dns: DnsResolver;
  readonly clock: Clock;
  readonly log: Logger;
  readonly zones: readonly ZoneConfig[];
  readonly timeout: number;
  /** Seconds; 0: only the first probe. */
  readonly probeInterval: number;
}

/** A set of DNS list zones asked together. */
export class DnsLists {
  readonly #opts: DnsListsOptions;
  readonly #zones: ZoneState[];
  #nextProbe = 0;
  /** When each zone's refusal was last logged (clock ms): at most once a minute per zone. */
  readonly #refusalLogged = new Map<string, number>();
  #probing: Promise<void> | undefined;

  constructor(opts: DnsListsOptions) {
    this.#opts = opts;
    this.#zones = opts.zones.map((config) => ({ config, wildcard: false }));
  }

  /** Ask `zone` about the reversed address `reversed`. */
  async #ask(zone: ZoneConfig, reversed: string): Promise<Answer> {
    const lookup = this.#opts.dns.lookup(`${reversed}.${zone.zone}`, 'A');
    const found = await within(lookup, this.#opts.timeout, { kind: 'error', reason: 'timeout' } as const);
    switch (found.kind) {
      case 'nxdomain':
      case 'nodata':
        return { kind: 'clear' };
      case 'error':
        return { kind: 'error', reason: found.reason };
      case 'answer': {
        const refusals = found.records.filter(isRefusal);
        if (refusals.length > 0) return { kind: 'refused', codes: refusals };
        const codes = found.records.filter((a) =>
          zone.codes === undefined ? a.startsWith('127.') : Object.hasOwn(zone.codes, a),
        );
        if (codes.length === 0) return { kind: 'clear' };
        const meanings = zone.codes === undefined ? [] : codes.map((c) => zone.codes?.[c] ?? c);
        return { kind: 'listed', codes, meanings };
      }
    }
  }

  /**
   * RFC 5782 section 5: 127.0.0.2 must be listed and 127.0.0.1 must not. A
   * zone listing 127.0.0.1 answers for everything and is ignored; one not
   * listing 127.0.0.2 is only logged (a private list may not carry it).
   */
  async probe(): Promise<void> {
    this.#nextProbe =
      this.#opts.probeInterval > 0
        ? this.#opts.clock.now() + this.#opts.probeInterval * 1000
        : Number.POSITIVE_INFINITY;
    await Promise.all(
      this.#zones.map(async (state) => {
        const [one, two] = await Promise.all([
          this.#ask(state.config, '1.0.0.127'),
          this.#ask(state.config, '2.0.0.127'),
        ]);
        const zone = state.config.zone;
        if (one.kind === 'error' || two.kind === 'error') {
          this.#opts.log.warn({ zone }, 'dns list test lookups failed: zone kept as it was');
          return;
        }
        const wildcard = one.kind === 'listed';
        if (wildcard && !state.wildcard)
          this.#opts.log.warn(
            { zone, codes: one.codes },
            'dns list answers for everything (lists the test address 127.0.0.1): ignored',
          );
        else if (!wildcard && state.wildcard)
          this.#opts.log.warn({ zone }, 'dns list no longer lists 127.0.0.1: used again');
        else if (two.kind !== 'listed')
          this.#opts.log.warn({ zone }, 'dns list does not list the test address 127.0.0.2');
        state.wildcard = wildcard;
      }),
    );
  }

  /** Probe when due (one probe at a time; callers wait for it so every lookup sees its outcome). */
  async #probeIfDue(): Promise<void> {
    if (this.#probing === undefined && this.#opts.clock.now() >= this.#nextProbe) {
      this.#probing = this.probe().finally(() => {
        this.#probing = undefined;
      });
    }
    await this.#probing;
  }

  /** Zones ignored because they answer for everything. */
  ignored(): readonly string[] {
    return this.#zones.filter((z) => z.wildcard).map((z) => z.config.zone);
  }

  /**
   * One result per zone for `address`, in zone order: `listed` when the zone
   * lists it, else `clear`, `refused` (the list refused the query: treated as
   * not listed, and logged) or `temperror`.
   */
  async lookup(
    address: string,
    results: {
      readonly listed: ListResult['result'];
      readonly clear: ListResult['result'];
    },
  ): Promise<ListResult[]> {
    const reversed = reversedAddress(address);
    if (reversed === undefined) return [];
    await this.#probeIfDue();
    const zones = this.#zones.filter((z) => !z.wildcard).map((z) => z.config);
    const answers = await Promise.all(zones.map((zone) => this.#ask(zone, reversed)));
    return answers.map((answer, i) => this.#result((zones[i] as ZoneConfig).zone, answer, results));
  }

  #result(
    zone: string,
    answer: Answer,
    results: { readonly listed: ListResult['result']; readonly clear: ListResult['result'] },
  ): ListResult {
    const properties = { 'dns.zone': zone };
    switch (answer.kind) {
      case 'listed':
        return {
          result: results.listed,
          zone,
          codes: answer.codes,
          meanings: answer.meanings,
          properties: { ...properties, 'policy.ip': answer.codes[0] as string },
          reason: `listed in ${zone}${answer.meanings.length > 0 ? ` (${answer.meanings.join(', ')})` : ''}`,
        };
      case 'clear':
        return { result: results.clear, zone, codes: [], meanings: [], properties };
      case 'refused': {
        const now = this.#opts.clock.now();
        const last = this.#refusalLogged.get(zone);
        if (last === undefined || now - last >= REFUSAL_LOG_INTERVAL_MS) {
          this.#refusalLogged.set(zone, now);
          this.#opts.log.warn(
            { zone, codes: answer.codes },
            'dns list refused the query (over its limit, or asked through a public resolver): not listed',
          );
        }
        return {
          result: results.clear,
          zone,
          codes: [],
          meanings: [],
          properties,
          reason: `query refused by ${zone} (${answer.codes.join(', ')})`,
        };
      }
      case 'error':
        return {
          result: 'temperror',
          zone,
          codes: [],
          meanings: [],
          properties,
          reason: `${zone}: ${answer.reason}`,
        };
    }
  }
}

/** A list plugin's zones, built from its `listSettings` and checked at start (RFC 5782 section 5). */
export function dnsListsOf(
  api: PluginApi<unknown>,
  config: Pick<DnsListsOptions, 'zones' | 'timeout' | 'probeInterval'>,
): DnsLists {
  const lists = new DnsLists({
    dns: api.server.dns,
    clock: api.server.clock,
    log: api.log,
    zones: config.zones,
    timeout: config.timeout,
    probeInterval: config.probeInterval,
  });
  api.onStart(() => lists.probe());
  return lists;
}
