/**
 * Which TLS a destination gets, in the spirit of Postfix's
 * `smtp_tls_policy_maps`:
 *
 * - `none`: never STARTTLS;
 * - `may`: STARTTLS when offered, any certificate (opportunistic, the default);
 * - `encrypt`: STARTTLS or defer (4.7.4), any certificate;
 * - `verify`: STARTTLS or defer, and the certificate must verify and name the MX host.
 *
 * The seam for MTA-STS (RFC 8461) and DANE (RFC 7672): a policy comes from a
 * chain of `TlsPolicySource`s, asked in order, the first answer wins. Today the
 * chain is the operator's table, then the default; DANE and MTA-STS sources go
 * in front of it.
 */
import { isIP } from 'node:net';
import type { TlsSettings } from '../outbound/connection.ts';
import { domainMatcher } from '../outbound/routing.ts';
import type { TlsMode } from '../outbound/smtp-client.ts';
import type { Exchanger } from './resolve.ts';

export type TlsPolicyLevel = 'none' | 'may' | 'encrypt' | 'verify';

export interface TlsPolicy {
  readonly level: TlsPolicyLevel;
  /** What decided it (for logs): `table`, `default`, later `dane`, `mta-sts`. */
  readonly source: string;
}

/** One source of policies: an answer, or undefined to leave it to the next source. */
export type TlsPolicySource = (destination: string) => Promise<TlsPolicy | undefined> | TlsPolicy | undefined;

/** The operator's table: `{ "example.com": "verify", "*.example.net": "encrypt" }`; the first matching entry wins. */
export function tableSource(table: Readonly<Record<string, TlsPolicyLevel>>): TlsPolicySource {
  const rules = Object.entries(table).map(([pattern, level]) => ({
    matches: domainMatcher([pattern]),
    level,
  }));
  return (destination) => {
    const rule = rules.find((r) => r.matches(destination));
    return rule ? { level: rule.level, source: 'table' } : undefined;
  };
}

/** Ask the sources in order; `fallback` when none answers. */
export async function policyFor(
  destination: string,
  sources: readonly TlsPolicySource[],
  fallback: TlsPolicyLevel,
): Promise<TlsPolicy> {
  for (const source of sources) {
    const p = await source(destination);
    if (p) return p;
  }
  return { level: fallback, source: 'default' };
}

/** The client settings for a policy, connecting to `exchanger`. */
export function clientTls(
  policy: TlsPolicy,
  exchanger: Exchanger,
  ca: TlsSettings['ca'] | undefined,
): { readonly tls: TlsMode; readonly tlsSettings: TlsSettings } {
  // SNI names the MX host (not the address connected to); an address literal sends none.
  const named = isIP(exchanger.name) === 0;
  const caPart = {
    ...(ca === undefined ? {} : { ca }),
    ...(named ? { servername: exchanger.name } : {}),
  };
  switch (policy.level) {
    case 'none':
      return { tls: 'none', tlsSettings: { rejectUnauthorized: false } };
    case 'may':
      return { tls: 'opportunistic', tlsSettings: { rejectUnauthorized: false, ...caPart } };
    case 'encrypt':
      return { tls: 'required', tlsSettings: { rejectUnauthorized: false, ...caPart } };
    case 'verify':
      // The certificate must name the MX host (not the address connected to).
      return {
        tls: 'required',
        tlsSettings: { rejectUnauthorized: true, ...caPart },
      };
  }
}
