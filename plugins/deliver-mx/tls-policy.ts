/**
 * Which TLS each mail exchanger of a destination gets. A policy is per
 * destination but constrains each exchanger; per exchanger the first of these
 * that applies decides (RFC 8461 section 2, RFC 7672):
 *
 * 1. **DANE** (`dane`): the MX lookup was DNSSEC-authenticated and the host has
 *    authenticated, usable TLSA records: TLS is mandatory and the certificate
 *    must match them (else defer, 4.7.5). Authenticated TLSA records of which
 *    none is usable still make TLS mandatory (RFC 7672 2.2).
 * 2. **MTA-STS** (`mta-sts`): the domain publishes a policy in `enforce` mode:
 *    only MX hosts its `mx` patterns match, only with a certificate that
 *    verifies for the MX name (else defer, 4.7.5; never plaintext). In
 *    `testing` mode: delivered as opportunistic, failures reported.
 * 3. **The operator's table** (`table`) then **the default** (`default`), in
 *    the spirit of Postfix's `smtp_tls_policy_maps`:
 *    - `none`: never STARTTLS (and neither DANE nor MTA-STS is consulted);
 *    - `may`: STARTTLS when offered, any certificate (opportunistic);
 *    - `encrypt`: STARTTLS or defer (4.7.4), any certificate;
 *    - `verify`: STARTTLS or defer, the certificate must verify and name the MX host;
 *    - `dane`: DANE when it applies (MTA-STS not consulted), else `may`;
 *    - `dane-only`: DANE or defer (`dane-required`);
 *    - `mta-sts`: MTA-STS when published (DANE not consulted), else `may`.
 *
 * Every session attempted and every policy failure is told to the `tlsReport`
 * service (RFC 8460) by the caller, from the `report` part of a plan.
 *
 * REQUIRETLS (RFC 8689 section 5): such a message goes only over TLS
 * authenticated by DANE, MTA-STS (`testing` counts as `enforce` for it), the
 * table's `verify`, or a certificate that verifies for an MX name from a
 * DNSSEC-authenticated MX lookup; a destination with none of these fails with
 * 5.7.30. `TLS-Required: No` (RFC 8689 section 4) turns DANE and MTA-STS
 * failures into opportunistic delivery.
 */
import { isIP } from 'node:net';
import type { DnsResolver } from '../../core/dns/types.ts';
import { type Reply, reply } from '../../core/reply.ts';
import type { CertificateProblem, TlsSettings } from '../outbound/connection.ts';
import { domainMatcher } from '../outbound/routing.ts';
import type { TlsMode } from '../outbound/smtp-client.ts';
import type { TlsFailureType, TlsPolicyType } from '../outbound/tls-report.ts';
import { daneVerifier, lookupTlsa, presentation } from './dane.ts';
import { allowsMx, type MtaStsPolicies, type StsLookup } from './mta-sts.ts';
import type { Exchanger } from './resolve.ts';

export type TlsPolicyLevel = 'none' | 'may' | 'encrypt' | 'verify' | 'dane' | 'dane-only' | 'mta-sts';

/** What decided an exchanger's TLS (logs, results, `queue show`). */
export type TlsPolicySource = 'dane' | 'mta-sts' | 'table' | 'default';

/** The report fields of the policy that applied (RFC 8460 `policy`). */
export interface ReportScope {
  readonly policyType: TlsPolicyType;
  readonly policyStrings: readonly string[];
  readonly mxHosts: readonly string[];
}

/** How to connect to one exchanger, or why not to. */
export interface ExchangerPolicy {
  readonly source: TlsPolicySource;
  /** The mode that applied, for logs: `dane`, `enforce`, `testing`, `verify`, `may`, ... */
  readonly mode: string;
  /** Do not connect: the reply for the recipients, the status, and the failure to report. */
  readonly refuse?: {
    readonly status: 'deferred' | 'failed';
    readonly reply: Reply;
    readonly failure?: TlsFailureType;
  };
  readonly tls: TlsMode;
  readonly tlsSettings: TlsSettings;
  /** Opportunistic: a failed handshake is tried again without TLS (unless REQUIRETLS). */
  readonly fallbackToClear: boolean;
  /** MTA-STS `testing`: certificate and MX failures are reported, not enforced. */
  readonly reportOnly: boolean;
  /** For `reportOnly`: the MX host is not in the policy. */
  readonly mxMismatch: boolean;
  /**
   * What a session that got TLS counts as in reports when the policy could not
   * authenticate it (TLSA records all unusable: `tlsa-invalid`); default `success`.
   */
  readonly unauthenticated?: TlsFailureType;
  /** What TLS reports say about sessions under this plan; undefined: nothing (the policy was set aside). */
  readonly report: ReportScope | undefined;
}

/** One destination's policy: a way to ask about each of its exchangers. */
export interface TlsPolicy {
  readonly destination: string;
  /** The table's or the default level for the destination. */
  readonly level: TlsPolicyLevel;
  readonly levelSource: 'table' | 'default';
  /** MTA-STS discovery for the destination (undefined when not consulted). */
  readonly sts: StsLookup | undefined;
  forExchanger(exchanger: Exchanger): Promise<ExchangerPolicy>;
}

export interface PolicyRequest {
  /** The destination domain (or an address literal in brackets). */
  readonly destination: string;
  /** The MX lookup was DNSSEC-authenticated (`dns.trustAd` and the AD bit). */
  readonly mxAuthenticated: boolean;
  /** The message asks for REQUIRETLS (RFC 8689). */
  readonly requireTls: boolean;
  /** Whether the message carries `TLS-Required: No`: asked only when DANE or MTA-STS applies. */
  readonly tlsOptional: () => Promise<boolean>;
}

export interface TlsPoliciesOptions {
  readonly table: Readonly<Record<string, TlsPolicyLevel>>;
  readonly fallback: TlsPolicyLevel;
  readonly dns: DnsResolver;
  /** CA certificates to trust instead of the defaults, for `verify` and MTA-STS MX certificates. */
  readonly ca: TlsSettings['ca'] | undefined;
  /** Look for DANE TLSA records (they count only with `dns.trustAd`). */
  readonly dane: boolean;
  /** MTA-STS discovery; undefined: off. */
  readonly mtaSts: MtaStsPolicies | undefined;
  readonly clock: { now(): number };
}

const NO_POLICY: ReportScope = Object.freeze({
  policyType: 'no-policy-found',
  policyStrings: [],
  mxHosts: [],
});

const PolicyReplies = Object.freeze({
  daneMismatchRequired: (host: string): Reply =>
    reply(451, '4.7.5', `DANE is required for ${host}, but it has no usable TLSA records (policy dane-only)`),
  tlsaLookupFailed: (host: string, why: string): Reply =>
    reply(451, '4.7.5', `TLSA lookup for ${host} failed (${why}); DANE requires it (policy dane)`),
  mxNotInStsPolicy: (host: string, domain: string): Reply =>
    reply(451, '4.7.5', `MX host ${host} is not in the MTA-STS policy of ${domain} (policy mta-sts enforce)`),
  requireTlsNoPath: (domain: string): Reply =>
    reply(
      550,
      '5.7.30',
      `REQUIRETLS support required, but no authenticated TLS path to ${domain} (no DANE, MTA-STS or verified policy)`,
    ),
  requireTlsNone: (domain: string): Reply =>
    reply(550, '5.7.30', `REQUIRETLS support required, but the TLS policy of ${domain} is none`),
});

export class TlsPolicies {
  readonly #o: TlsPoliciesOptions;
  readonly #rules: ReadonlyArray<{ matches: (d: string) => boolean; level: TlsPolicyLevel }>;

  constructor(options: TlsPoliciesOptions) {
    this.#o = options;
    this.#rules = Object.entries(options.table).map(([pattern, level]) => ({
      matches: domainMatcher([pattern]),
      level,
    }));
  }

  /** The policy of a destination; MTA-STS discovery happens here (once per delivery). */
  async policyFor(req: PolicyRequest): Promise<TlsPolicy> {
    const rule = this.#rules.find((r) => r.matches(req.destination));
    const level = rule?.level ?? this.#o.fallback;
    const levelSource = rule ? 'table' : 'default';
    const literal = req.destination.startsWith('[');
    const sts =
      this.#o.mtaSts && !literal && level !== 'none' && level !== 'dane' && level !== 'dane-only'
        ? await this.#o.mtaSts.lookup(req.destination)
        : undefined;
    return {
      destination: req.destination,
      level,
      levelSource,
      sts,
      forExchanger: async (exchanger) => {
        const p = await this.#forExchanger(req, level, levelSource, sts, exchanger);
        const published = p.source === 'dane' || p.source === 'mta-sts';
        return published && !req.requireTls && (await req.tlsOptional())
          ? setAside(p, level, levelSource)
          : p;
      },
    };
  }

  async #forExchanger(
    req: PolicyRequest,
    level: TlsPolicyLevel,
    levelSource: 'table' | 'default',
    sts: StsLookup | undefined,
    exchanger: Exchanger,
  ): Promise<ExchangerPolicy> {
    const o = this.#o;
    const name = exchanger.name;
    const named = isIP(name) === 0;
    const base = {
      ...(o.ca === undefined ? {} : { ca: o.ca }),
      ...(named ? { servername: name } : {}),
    };
    const plan = (
      p: Partial<ExchangerPolicy> & Pick<ExchangerPolicy, 'source' | 'mode'>,
    ): ExchangerPolicy => ({
      tls: 'required',
      tlsSettings: { rejectUnauthorized: true, ...base },
      fallbackToClear: false,
      reportOnly: false,
      mxMismatch: false,
      report: NO_POLICY,
      ...p,
    });

    if (level === 'none') {
      if (req.requireTls) {
        return plan({
          source: levelSource,
          mode: 'none',
          refuse: { status: 'failed', reply: PolicyReplies.requireTlsNone(req.destination) },
        });
      }
      return plan({
        source: levelSource,
        mode: 'none',
        tls: 'none',
        tlsSettings: { rejectUnauthorized: false },
      });
    }

    // 1. DANE: only below a secure MX lookup (RFC 7672 2.2.1), never for address literals.
    let tlsMandatory = false;
    let daneScope: ReportScope | undefined;
    if (o.dane && named && req.mxAuthenticated && level !== 'mta-sts') {
      const tlsa = await lookupTlsa(o.dns, name);
      if (tlsa.kind === 'tlsa') {
        return plan({
          source: 'dane',
          mode: 'dane',
          tlsSettings: {
            rejectUnauthorized: false,
            ...base,
            verify: daneVerifier(tlsa.records, tlsa.names, () => o.clock.now()),
          },
          report: { policyType: 'tlsa', policyStrings: presentation(tlsa.all), mxHosts: [] },
        });
      }
      if (tlsa.kind === 'error') {
        return plan({
          source: 'dane',
          mode: 'dane',
          refuse: {
            status: 'deferred',
            reply: PolicyReplies.tlsaLookupFailed(name, tlsa.reason),
            failure: 'dnssec-invalid',
          },
          report: { policyType: 'tlsa', policyStrings: [], mxHosts: [] },
        });
      }
      if (tlsa.kind === 'unusable') {
        tlsMandatory = true;
        daneScope = { policyType: 'tlsa', policyStrings: presentation(tlsa.all), mxHosts: [] };
      }
    }
    if (level === 'dane-only') {
      return plan({
        source: levelSource,
        mode: 'dane-only',
        refuse: {
          status: 'deferred',
          reply: PolicyReplies.daneMismatchRequired(name),
          failure: daneScope ? 'tlsa-invalid' : 'dane-required',
        },
        report: daneScope ?? { policyType: 'tlsa', policyStrings: [], mxHosts: [] },
      });
    }

    // 2. MTA-STS (not for `dane`: that level asks for DANE alone).
    const policy = sts?.kind === 'policy' && level !== 'dane' ? sts.policy : undefined;
    if (policy && policy.mode !== 'none') {
      const scope: ReportScope = { policyType: 'sts', policyStrings: policy.lines, mxHosts: policy.mx };
      const listed = allowsMx(policy, name);
      // RFC 8689 5: for a REQUIRETLS message a `testing` policy is applied as `enforce`.
      const enforce = policy.mode === 'enforce' || req.requireTls;
      if (enforce) {
        if (!listed) {
          return plan({
            source: 'mta-sts',
            mode: policy.mode,
            refuse: {
              status: 'deferred',
              reply: PolicyReplies.mxNotInStsPolicy(name, req.destination),
              failure: 'validation-failure',
            },
            report: scope,
          });
        }
        return plan({
          source: 'mta-sts',
          mode: policy.mode,
          tlsSettings: { rejectUnauthorized: true, ...base, dnsIdOnly: true },
          report: scope,
        });
      }
      // `testing`: deliver as opportunistic, but check everything and report what failed.
      return plan({
        source: 'mta-sts',
        mode: 'testing',
        tls: tlsMandatory ? 'required' : 'opportunistic',
        tlsSettings: { rejectUnauthorized: false, ...base, dnsIdOnly: true },
        fallbackToClear: !tlsMandatory,
        reportOnly: true,
        mxMismatch: !listed,
        report: scope,
      });
    }

    // 3. The table, then the default.
    const effective = level === 'dane' || level === 'mta-sts' ? 'may' : level;
    const scope = daneScope ?? NO_POLICY;
    if (req.requireTls) {
      // Authenticated only by `verify`, or by a certificate for an MX name from a secure MX lookup.
      if (effective !== 'verify' && !(req.mxAuthenticated && named)) {
        return plan({
          source: levelSource,
          mode: effective,
          refuse: { status: 'failed', reply: PolicyReplies.requireTlsNoPath(req.destination) },
          report: scope,
        });
      }
      return plan({ source: levelSource, mode: 'verify', report: scope });
    }
    switch (effective) {
      case 'verify':
        return plan({ source: levelSource, mode: 'verify', report: scope });
      case 'encrypt':
        return plan({
          source: levelSource,
          mode: 'encrypt',
          tlsSettings: { rejectUnauthorized: false, ...base },
          report: scope,
        });
      default:
        return plan({
          // Unusable TLSA records: the domain's DANE publication is what makes TLS mandatory.
          source: tlsMandatory ? 'dane' : levelSource,
          mode: tlsMandatory ? 'encrypt' : 'may',
          tls: tlsMandatory ? 'required' : 'opportunistic',
          tlsSettings: { rejectUnauthorized: false, ...base },
          fallbackToClear: !tlsMandatory,
          report: scope,
          ...(tlsMandatory ? { unauthenticated: 'tlsa-invalid' as const } : {}),
        });
    }
  }
}

/**
 * `TLS-Required: No` (RFC 8689 section 4): the sender asks that the
 * recipient domain's policies (DANE, MTA-STS) be ignored. The operator's own
 * level is kept: `verify` and `encrypt` still demand TLS (and `verify` a
 * certificate that verifies); any other level gets TLS when it works, else
 * clear.
 */
function setAside(
  p: ExchangerPolicy,
  level: TlsPolicyLevel,
  levelSource: 'table' | 'default',
): ExchangerPolicy {
  const { verify: _dropped, dnsIdOnly: _domains, ...settings } = p.tlsSettings;
  const kept = level === 'verify' || level === 'encrypt' ? level : undefined;
  return {
    source: kept ? levelSource : p.source,
    mode: kept
      ? `${kept} (${p.source} ${p.mode} ignored: TLS-Required: No)`
      : `${p.mode}, ignored (TLS-Required: No)`,
    tls: kept ? 'required' : 'opportunistic',
    tlsSettings: { ...settings, rejectUnauthorized: kept === 'verify' },
    fallbackToClear: kept === undefined,
    reportOnly: false,
    mxMismatch: false,
    // The sender set the policy aside: its sessions say nothing about it.
    report: undefined,
  };
}

/** The problem a `reportOnly` (MTA-STS testing) session had, if any, from what the connection saw. */
export function testingProblem(
  plan: ExchangerPolicy,
  tls: { readonly verifyError: string | undefined } | undefined,
  classify: (code: string) => TlsFailureType,
): CertificateProblem | undefined {
  if (!tls) return { failure: 'starttls-not-supported', reason: 'no TLS session' };
  if (plan.mxMismatch) return { failure: 'validation-failure', reason: 'MX host not in the MTA-STS policy' };
  if (tls.verifyError) return { failure: classify(tls.verifyError), reason: tls.verifyError };
  return undefined;
}
