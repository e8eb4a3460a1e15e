/** The Authentication-Results header field (RFC 8601 section 2.2) from recorded check results. */
import type { RecordedResult } from '../policy/policy.ts';

/** RFC 2045 token: printable ASCII without space and tspecials. */
const TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$/;
/** `[local-part "@"] domain-name`, the other unquoted form of a pvalue (RFC 8601 2.2). */
const ADDRESS = /^(?:[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z.]+@)?[0-9A-Za-z](?:[0-9A-Za-z.-]*[0-9A-Za-z])?$/;

function quoted(text: string): string {
  // Printable ASCII only in a header value; escape the two specials of a quoted-string.
  const printable = text.replace(/[^\x20-\x7e]/g, '?');
  return `"${printable.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

function pvalue(value: string): string {
  return TOKEN.test(value) || ADDRESS.test(value) ? value : quoted(value);
}

/**
 * The methods of IANA's "Email Authentication Methods" registry (RFC 8601
 * sections 2.7 and 6). Only these may appear in the field: a check that is
 * not one (`dnsbl`, `helo`, a custom check) is for policy and the log, and
 * a check that implements a registered method names it in `method`
 * (`fcrdns` records `iprev`).
 */
export const REGISTERED_METHODS: ReadonlySet<string> = new Set([
  'arc',
  'auth',
  'dkim',
  'dkim-adsp',
  'dkim-atps',
  'dmarc',
  'dnswl',
  'domainkeys',
  'iprev',
  'rrvs',
  'sender-id',
  'smime',
  'spf',
  'vbr',
]);

/** The results the field may carry: those of registered methods, in order. */
export function registeredResults(results: readonly RecordedResult[]): readonly RecordedResult[] {
  return results.filter((r) => REGISTERED_METHODS.has(r.result.method ?? r.check));
}

/** One `method=result reason="..." ptype.property=value` clause. */
export function resinfo(r: RecordedResult): string {
  const { result } = r;
  let out = `${result.method ?? r.check}=${result.result}`;
  if (result.reason !== undefined) out += ` reason=${quoted(result.reason)}`;
  for (const [key, value] of Object.entries(result.properties ?? {})) out += ` ${key}=${pvalue(value)}`;
  return out;
}

/**
 * `Authentication-Results: <authserv-id>; <resinfo>; ...`, one clause per
 * folded line, or `<authserv-id>; none` when no check reported (RFC 8601 2.2).
 */
export function authenticationResults(authservId: string, results: readonly RecordedResult[]): string {
  if (results.length === 0) return `Authentication-Results: ${authservId}; none`;
  return `Authentication-Results: ${authservId};\r\n\t${results.map(resinfo).join(';\r\n\t')}`;
}

/**
 * The authserv-id of an Authentication-Results field (`Authentication-Results:
 * [CFWS] authserv-id [CFWS authres-version] ";" ...`), or undefined when it
 * has none. Comments before it are skipped; a quoted authserv-id is unquoted.
 */
export function authservIdOf(field: string): string | undefined {
  let value = field.slice(field.indexOf(':') + 1).replace(/\r\n/g, '');
  // Comments (possibly nested) and white space before the authserv-id.
  for (;;) {
    value = value.replace(/^[ \t]+/, '');
    if (!value.startsWith('(')) break;
    let depth = 0;
    let i = 0;
    for (; i < value.length; i++) {
      const c = value[i];
      if (c === '\\') i++;
      else if (c === '(') depth++;
      else if (c === ')' && --depth === 0) break;
    }
    value = value.slice(i + 1);
  }
  const quoted = /^"((?:[^"\\]|\\.)*)"/.exec(value);
  if (quoted) return quoted[1]?.replace(/\\(.)/g, '$1');
  const token = /^[^\s;()"]+/.exec(value)?.[0];
  return token === undefined || token === '' ? undefined : token;
}
