/**
 * DANE for SMTP (RFC 7672, with RFC 6698/7671): the TLSA records of an MX
 * host, looked up through the server's resolver and believed only when the
 * answer is DNSSEC-authenticated (the AD bit from a resolver the operator
 * trusts, `dns.trustAd`), and the check of the certificate chain the server
 * presents against them.
 *
 * Supported: usages DANE-TA(2) and DANE-EE(3), selectors Cert(0) and SPKI(1),
 * matching types Full(0), SHA2-256(1) and SHA2-512(2). PKIX usages (0, 1) are
 * unusable for SMTP (RFC 7672 3.1.3).
 */
import { createHash, type X509Certificate } from 'node:crypto';
import type { DnsRecordTypes, DnsResolver } from '../../core/dns/types.ts';
import type { CertificateProblem } from '../outbound/connection.ts';

export type TlsaRecord = DnsRecordTypes['TLSA'];

/** What the TLSA lookup of one MX host says. */
export type DaneLookup =
  /** DANE does not apply: no TLSA records, or the answer was not authenticated. */
  | { readonly kind: 'none' }
  /**
   * Authenticated TLSA records of which these are usable: TLS is mandatory and
   * must match them; `names` are the reference identifiers (the MX host, and
   * the name its CNAME chain led to).
   */
  | {
      readonly kind: 'tlsa';
      readonly records: readonly TlsaRecord[];
      readonly all: readonly TlsaRecord[];
      readonly names: readonly string[];
    }
  /** Authenticated TLSA records, none usable: no authentication, but TLS is mandatory (RFC 7672 2.2). */
  | { readonly kind: 'unusable'; readonly all: readonly TlsaRecord[] }
  /** The lookup failed (a validating resolver answers SERVFAIL to bogus data): the host is not to be used (RFC 7672 2.2). */
  | { readonly kind: 'error'; readonly reason: string };

/** The TLSA owner name of an SMTP server (RFC 7672 2.2.3): port 25 whatever port the tests stand in with. */
function tlsaName(host: string): string {
  return `_25._tcp.${host}`;
}

function usableRecord(r: TlsaRecord): boolean {
  return (r.usage === 2 || r.usage === 3) && (r.selector === 0 || r.selector === 1) && r.matchingType <= 2;
}

/**
 * Look up the TLSA records of `host`; only for a host whose MX lookup was
 * itself secure (RFC 7672 2.2.1). A host whose address records are not
 * authenticated gets no DANE either; when they came through a CNAME chain,
 * the records at the chain's target come first, then those at the MX host
 * name (RFC 7672 2.2.2).
 */
export async function lookupTlsa(dns: DnsResolver, host: string): Promise<DaneLookup> {
  const address = await addressOf(dns, host);
  if (!address.secure) return { kind: 'none' };
  if (address.canonical !== host) {
    const expanded = await tlsaAt(dns, address.canonical, [host, address.canonical]);
    if (expanded.kind !== 'none') return expanded;
  }
  return tlsaAt(dns, host, [host]);
}

async function tlsaAt(dns: DnsResolver, base: string, names: readonly string[]): Promise<DaneLookup> {
  const answer = await dns.lookup(tlsaName(base), 'TLSA');
  switch (answer.kind) {
    case 'error':
      return { kind: 'error', reason: answer.reason };
    case 'nodata':
    case 'nxdomain':
      return { kind: 'none' };
    case 'answer': {
      // An insecure answer is as good as none (RFC 7672 2.2): anyone on the path could have made it up.
      if (!answer.authenticated) return { kind: 'none' };
      const records = answer.records.filter(usableRecord);
      return records.length > 0
        ? { kind: 'tlsa', records, all: answer.records, names }
        : { kind: 'unusable', all: answer.records };
    }
  }
}

/** Whether the host's A records (or, without any, its AAAA records) came authenticated, and the name they belong to. */
async function addressOf(dns: DnsResolver, host: string): Promise<{ secure: boolean; canonical: string }> {
  for (const type of ['A', 'AAAA'] as const) {
    const r = await dns.lookup(host, type);
    if (r.kind === 'answer') return { secure: r.authenticated, canonical: r.canonicalName };
  }
  return { secure: false, canonical: host };
}

/** TLSA records in presentation format (`3 1 1 ab12...`), as TLS reports quote them. */
export function presentation(records: readonly TlsaRecord[]): string[] {
  return records.map(
    (r) => `${r.usage} ${r.selector} ${r.matchingType} ${Buffer.from(r.data).toString('hex')}`,
  );
}

function selected(cert: X509Certificate, selector: number): Buffer {
  return selector === 0 ? cert.raw : (cert.publicKey.export({ type: 'spki', format: 'der' }) as Buffer);
}

function associated(data: Buffer, matchingType: number): Buffer {
  if (matchingType === 1) return createHash('sha256').update(data).digest();
  if (matchingType === 2) return createHash('sha512').update(data).digest();
  return data;
}

function matches(cert: X509Certificate, r: TlsaRecord): boolean {
  return associated(selected(cert, r.selector), r.matchingType).equals(Buffer.from(r.data));
}

function validAt(cert: X509Certificate, now: number): boolean {
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

/**
 * The check of a presented chain (leaf first) against usable TLSA records:
 *
 * - DANE-EE(3): the leaf matches; its names and dates do not matter (RFC 7672 3.1.1);
 * - DANE-TA(2): a certificate the server sent matches, the leaf chains to it by
 *   signature through CA certificates only, the leaf names one of `names` (RFC 7672 3.2.2: the MX host) and
 *   every certificate up to it is within its dates (RFC 7672 3.1.2).
 */
export function daneVerifier(
  records: readonly TlsaRecord[],
  names: readonly string[],
  now: () => number,
): (chain: readonly X509Certificate[]) => CertificateProblem | undefined {
  return (chain) => {
    const leaf = chain[0];
    if (!leaf) return { failure: 'validation-failure', reason: 'the server presented no certificate' };
    if (records.some((r) => r.usage === 3 && matches(leaf, r))) return undefined;
    const ta = records.filter((r) => r.usage === 2);
    let problem: CertificateProblem = {
      failure: 'validation-failure',
      reason: 'no TLSA record matches the certificate chain presented',
    };
    for (let i = 1; i < chain.length; i++) {
      const anchor = chain[i] as X509Certificate;
      if (!ta.some((r) => matches(anchor, r))) continue;
      if (!linked(chain.slice(0, i + 1))) {
        problem = {
          failure: 'validation-failure',
          reason: 'the certificate does not chain to the DANE trust anchor',
        };
        continue;
      }
      if (!chain.slice(0, i + 1).every((c) => validAt(c, now()))) {
        return {
          failure: 'certificate-expired',
          reason: 'a certificate below the DANE trust anchor expired',
        };
      }
      if (!names.some((n) => leaf.checkHost(n, { subject: 'default' }) !== undefined)) {
        return {
          failure: 'certificate-host-mismatch',
          reason: `the certificate names none of ${names.join(', ')}`,
        };
      }
      return undefined;
    }
    return problem;
  };
}

/**
 * Each certificate is issued and signed by the next one, and every issuer is a
 * CA (basicConstraints CA:TRUE): a leaf the trust anchor issued to someone
 * else must not vouch for the MX host (OpenSSL's issuer check looks at key
 * usage, which a leaf may lack, not at basicConstraints).
 */
function linked(chain: readonly X509Certificate[]): boolean {
  for (let i = 0; i + 1 < chain.length; i++) {
    const child = chain[i] as X509Certificate;
    const parent = chain[i + 1] as X509Certificate;
    if (!parent.ca || !child.checkIssued(parent) || !child.verify(parent.publicKey)) return false;
  }
  return true;
}
