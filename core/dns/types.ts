/**
 * The DNS resolver service's contract: one resolver per server instance
 * (`api.server.dns`), used by every plugin that needs DNS, so a test points
 * the whole server at a DNS server of its own.
 *
 * Answers are values, never exceptions: a check must tell "the name does not
 * exist" (`nxdomain`) from "it exists without records of that type"
 * (`nodata`) from "could not find out" (`error`, a temporary failure), as
 * SPF, DMARC and MX routing each act differently on the three.
 */

/** The record types the service resolves, and what one record of each looks like. */
export interface DnsRecordTypes {
  A: string;
  AAAA: string;
  /** `exchange` without the trailing dot; the null MX (RFC 7505) has exchange `''`. */
  MX: { readonly exchange: string; readonly preference: number };
  /** One TXT record: its character-strings joined with nothing between them (RFC 7208 3.3). */
  TXT: string;
  PTR: string;
  CNAME: string;
  TLSA: {
    readonly usage: number;
    readonly selector: number;
    readonly matchingType: number;
    readonly data: Uint8Array;
  };
}

export type DnsRecordType = keyof DnsRecordTypes;

/** Why a lookup could not find out: a temporary failure, worth retrying later. */
export type DnsErrorReason = 'servfail' | 'refused' | 'timeout' | 'format' | 'network';

export type DnsResult<T> =
  | {
      readonly kind: 'answer';
      readonly records: readonly T[];
      /** Seconds the answer may be kept (the smallest TTL of the records used). */
      readonly ttl: number;
      /** The resolver set the AD bit and is one the operator trusts to validate (DNSSEC). */
      readonly authenticated: boolean;
      /** The name the records belong to, after any CNAME chain (lower case, no trailing dot). */
      readonly canonicalName: string;
    }
  | {
      /** The name exists but has no records of this type. */
      readonly kind: 'nodata';
      readonly authenticated: boolean;
    }
  | {
      /** The name does not exist. */
      readonly kind: 'nxdomain';
      readonly authenticated: boolean;
    }
  | { readonly kind: 'error'; readonly reason: DnsErrorReason };

export interface DnsResolver {
  /** Look up `name` (a domain, with or without the trailing dot; IDNs in A-label form). */
  lookup<T extends DnsRecordType>(name: string, type: T): Promise<DnsResult<DnsRecordTypes[T]>>;
  /**
   * What `lookup` would answer at once from the cache, without a promise
   * (`undefined`: not cached, ask `lookup`). Optional: a resolver without a
   * cache need not have it. For hot paths that can finish synchronously when
   * the answer is cached.
   */
  cached?<T extends DnsRecordType>(name: string, type: T): DnsResult<DnsRecordTypes[T]> | undefined;
}
