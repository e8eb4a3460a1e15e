/**
 * The reporting policy a domain publishes at `_smtp._tls.<domain>` (RFC 8460
 * section 3): `v=TLSRPTv1; rua=<uri>[,<uri>...]`, with `mailto:` and `https:`
 * endpoints. Records that do not start with the version are ignored; unless
 * exactly one is left and it is well formed, the domain does not take reports.
 */

/** Where one report goes. */
export type ReportEndpoint =
  | { readonly kind: 'mailto'; readonly uri: string; readonly address: string }
  | { readonly kind: 'https'; readonly uri: string };

export type PolicyRecordResult =
  | { readonly kind: 'policy'; readonly endpoints: readonly ReportEndpoint[]; readonly record: string }
  | { readonly kind: 'none'; readonly why: string };

const VERSION = 'v=TLSRPTv1';
/** A field name and value (RFC 8460 section 3: `tlsrpt-ext-name "=" tlsrpt-ext-value`, and `rua`). */
const FIELD = /^([A-Za-z0-9](?:[A-Za-z0-9._-]{0,31}))=(.*)$/s;
/** One `addr-spec` of a `mailto:` URI, after percent-decoding (no spaces, one `@`, a dotted domain). */
const MAILBOX = /^[^\s@<>()",;:\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/;

/** The endpoint a `rua` URI names, or why it cannot be used. */
function endpointOf(uri: string): ReportEndpoint | string {
  const lower = uri.toLowerCase();
  if (lower.startsWith('mailto:')) {
    // A mailto URI may carry `?subject=...` headers (RFC 6068): ignored, reports have their own.
    const path = uri.slice('mailto:'.length).split('?')[0] ?? '';
    let address: string;
    try {
      address = decodeURIComponent(path);
    } catch {
      return `bad percent-encoding in ${uri}`;
    }
    if (!MAILBOX.test(address)) return `not a mailbox: ${uri}`;
    return { kind: 'mailto', uri, address };
  }
  if (lower.startsWith('https:')) {
    try {
      const url = new URL(uri);
      if (url.hostname === '') return `no host in ${uri}`;
    } catch {
      return `not a URL: ${uri}`;
    }
    return { kind: 'https', uri };
  }
  return `unsupported scheme: ${uri}`;
}

/**
 * Read the TXT records of `_smtp._tls.<domain>`. Endpoints with a scheme other
 * than `mailto:` and `https:` are skipped (RFC 8460 defines only these two);
 * a record left with none is no policy.
 */
export function parsePolicyRecords(txt: readonly string[]): PolicyRecordResult {
  const candidates = txt.filter((r) => r.startsWith(VERSION));
  if (candidates.length === 0) return { kind: 'none', why: 'no v=TLSRPTv1 record' };
  if (candidates.length > 1) return { kind: 'none', why: `${candidates.length} v=TLSRPTv1 records` };
  const record = candidates[0] as string;
  const fields = record.split(';').map((f) => f.replace(/^[ \t]+|[ \t]+$/g, ''));
  if (fields[0] !== VERSION) return { kind: 'none', why: 'malformed version field' };
  // A trailing `;` leaves one empty field at the end, which the grammar allows.
  if (fields.at(-1) === '') fields.pop();
  let rua: string | undefined;
  for (const field of fields.slice(1)) {
    const m = FIELD.exec(field);
    if (!m) return { kind: 'none', why: `malformed field "${field}"` };
    if (m[1] === 'rua') {
      if (rua !== undefined) return { kind: 'none', why: 'more than one rua field' };
      rua = m[2] as string;
    }
  }
  if (rua === undefined) return { kind: 'none', why: 'no rua field' };
  const endpoints: ReportEndpoint[] = [];
  const skipped: string[] = [];
  for (const uri of rua.split(',').map((u) => u.replace(/^[ \t]+|[ \t]+$/g, ''))) {
    if (uri === '') return { kind: 'none', why: 'empty URI in rua' };
    const e = endpointOf(uri);
    if (typeof e === 'string') skipped.push(e);
    else if (!endpoints.some((x) => x.uri === e.uri)) endpoints.push(e);
  }
  if (endpoints.length === 0) return { kind: 'none', why: `no usable rua URI (${skipped.join('; ')})` };
  return { kind: 'policy', endpoints, record };
}
