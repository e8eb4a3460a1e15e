/**
 * The aggregate report (RFC 8460 section 4): one JSON object per policy
 * domain and UTC day, a `policies` entry per policy that applied, with the
 * session totals and the failures grouped by result type and details.
 * Also the report's file name (section 5.1).
 */
import type { CounterRow } from './store.ts';

export interface ReportMeta {
  readonly organizationName: string;
  readonly contactInfo: string;
  readonly reportId: string;
  /** `YYYY-MM-DD` (UTC). */
  readonly day: string;
  readonly domain: string;
}

export interface FailureDetail {
  readonly 'result-type': string;
  readonly 'sending-mta-ip'?: string;
  readonly 'receiving-mx-hostname'?: string;
  readonly 'receiving-mx-helo'?: string;
  readonly 'receiving-ip'?: string;
  readonly 'failed-session-count': number;
  readonly 'additional-information'?: string;
  readonly 'failure-reason-code'?: string;
}

export interface PolicyReport {
  readonly policy: {
    readonly 'policy-type': string;
    readonly 'policy-string'?: readonly string[];
    readonly 'policy-domain': string;
    readonly 'mx-host'?: readonly string[];
  };
  readonly summary: {
    readonly 'total-successful-session-count': number;
    readonly 'total-failure-session-count': number;
  };
  readonly 'failure-details'?: readonly FailureDetail[];
}

export interface TlsReport {
  readonly 'organization-name': string;
  readonly 'date-range': { readonly 'start-datetime': string; readonly 'end-datetime': string };
  readonly 'contact-info': string;
  readonly 'report-id': string;
  readonly policies: readonly PolicyReport[];
}

/** First and last second of a UTC day, as ms since the epoch. */
export function dayBounds(day: string): { start: number; end: number } {
  const start = Date.parse(`${day}T00:00:00Z`);
  return { start, end: start + 86_400_000 - 1000 };
}

/** RFC 3339 `date-time` in UTC, whole seconds. */
function rfc3339(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}

/** Build the report of one domain's day from its counters. */
export function buildReport(meta: ReportMeta, rows: readonly CounterRow[]): TlsReport {
  const byPolicy = new Map<string, { success: number; failure: number; details: FailureDetail[] }>();
  for (const row of rows) {
    let p = byPolicy.get(row.policy);
    if (!p) {
      p = { success: 0, failure: 0, details: [] };
      byPolicy.set(row.policy, p);
    }
    const count = Number(row.count);
    if (row.result === 'success') {
      p.success += count;
      continue;
    }
    p.failure += count;
    const detail = JSON.parse(row.detail) as Record<string, string>;
    p.details.push({ 'result-type': row.result, ...detail, 'failed-session-count': count });
  }
  const policies: PolicyReport[] = [];
  for (const [key, p] of byPolicy) {
    const [type, strings, mx] = JSON.parse(key) as [string, string[], string[]];
    policies.push({
      policy: {
        'policy-type': type,
        ...(strings.length > 0 ? { 'policy-string': strings } : {}),
        'policy-domain': meta.domain,
        ...(mx.length > 0 ? { 'mx-host': mx } : {}),
      },
      summary: { 'total-successful-session-count': p.success, 'total-failure-session-count': p.failure },
      ...(p.details.length > 0 ? { 'failure-details': p.details } : {}),
    });
  }
  const { start, end } = dayBounds(meta.day);
  return {
    'organization-name': meta.organizationName,
    'date-range': { 'start-datetime': rfc3339(start), 'end-datetime': rfc3339(end) },
    'contact-info': meta.contactInfo,
    'report-id': meta.reportId,
    policies,
  };
}

/**
 * `submitter!policy-domain!begin!end!unique-id.json.gz` (RFC 8460 section
 * 5.1), the times in seconds since the epoch.
 */
export function reportFilename(submitter: string, domain: string, day: string, uniqueId: string): string {
  const { start, end } = dayBounds(day);
  // The unique id is letters and digits only in the file name's grammar.
  const safeId = uniqueId.replace(/[^A-Za-z0-9]/g, '');
  return `${submitter}!${domain}!${start / 1000}!${end / 1000}!${safeId}.json.gz`;
}
