/**
 * The contract between outbound delivery and TLS reporting (RFC 8460): for
 * every session it attempts under a TLS policy, a delivery plugin tells the
 * `tlsReport` service (when one is loaded) whether TLS was negotiated as the
 * policy demands, or which failure stopped it. A reporting plugin counts the
 * events per policy domain and day and sends the aggregate reports.
 *
 * The names follow the report's JSON fields (RFC 8460 section 4.3, result types
 * section 4.3.2.1), so a report is a plain projection of the counted events.
 */

/** Which policy governed the session (`policy-type`). */
export type TlsPolicyType = 'sts' | 'tlsa' | 'no-policy-found';

/** RFC 8460 section 4.3.2.1 result types. */
export type TlsFailureType =
  // Negotiation failures
  | 'starttls-not-supported'
  | 'certificate-host-mismatch'
  | 'certificate-expired'
  | 'certificate-not-trusted'
  | 'validation-failure'
  // Policy failures: DANE
  | 'tlsa-invalid'
  | 'dnssec-invalid'
  | 'dane-required'
  // Policy failures: MTA-STS
  | 'sts-policy-fetch-error'
  | 'sts-policy-invalid'
  | 'sts-webpki-invalid';

/** One delivery session (or policy lookup) as the report counts it. */
export interface TlsSessionEvent {
  /** The domain whose policy applied (`policy-domain`): the recipient domain. */
  readonly policyDomain: string;
  readonly policyType: TlsPolicyType;
  /** `policy-string`: the MTA-STS policy's lines, or the TLSA records as presentation text. */
  readonly policyStrings: readonly string[];
  /** `mx-host`: the MTA-STS policy's `mx` patterns (empty for TLSA and no policy). */
  readonly mxHosts: readonly string[];
  /** `success`, or what went wrong. */
  readonly result: 'success' | TlsFailureType;
  /** When it happened (ms since the epoch, server clock): the report day is taken from it. */
  readonly at: number;
  readonly sendingMtaIp?: string;
  readonly receivingMxHostname?: string;
  readonly receivingMxHelo?: string;
  readonly receivingIp?: string;
  /** `additional-information`: a URI with more detail. */
  readonly additionalInformation?: string;
  /** `failure-reason-code`: free text for the receiving operator (never secrets). */
  readonly failureReasonCode?: string;
}

/** Published as the `tlsReport` service by a TLS reporting plugin. Must not throw or block. */
export interface TlsReportSink {
  record(event: TlsSessionEvent): void;
}

declare module '../../core/plugin.ts' {
  interface Services {
    tlsReport: TlsReportSink;
  }
}

declare module '../../core/types.ts' {
  interface EnvelopeAttributes {
    /**
     * Set by a TLS reporting plugin on the report mail it queues (which also
     * carries `TLS-Required: No`). RFC 8460: a report is delivered despite TLS
     * failures at the destination, and its own session is not counted in the
     * next report; a delivery plugin that records TLS session events reads it
     * to leave such sessions out.
     */
    tlsReport?: boolean;
  }
}
