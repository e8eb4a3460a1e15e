/** The Authentication-Results header field (RFC 8601 section 2.2) from recorded check results. */
import type { RecordedResult } from '../policy/policy.ts';

/** RFC 2045 token: printable ASCII without space and tspecials. */
const TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$/;
/** `[local-part "@"] domain-name`, the other unquoted form of a pvalue (RFC 8601 2.2). */
const ADDRESS = /^(?:[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z.]+@)?[0-9A-Za-z](?:[0-9A-Za-z.-]*[0-9A-Za-z])?$/;

/** Characters a quoted-string may not carry: controls always, and anything past ASCII unless `utf8`. */
const NOT_ASCII_TEXT = /[^\x20-\x7e]/g;
const NOT_UTF8_TEXT = /[^\x20-\x7e\u{a0}-\u{d7ff}\u{e000}-\u{10ffff}]/gu;
/** What a quoted-string cannot carry as it is in any message: anything but printable ASCII, `"` and `\\`. */
const NOT_PLAIN_QUOTED = /[^\x20-\x21\x23-\x5b\x5d-\x7e]/;

/**
 * A quoted-string: printable ASCII, and with `utf8` (an internationalized
 * message, RFC 6532 3.2) printable UTF-8 too; anything else becomes `?`.
 */
function quoted(text: string, utf8: boolean): string {
  // The common case: printable ASCII without the two specials, quoted as it is.
  if (!NOT_PLAIN_QUOTED.test(text)) return `"${text}"`;
  const printable = text.replace(utf8 ? NOT_UTF8_TEXT : NOT_ASCII_TEXT, '?');
  // Escape the two specials of a quoted-string.
  return `"${printable.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

function pvalue(value: string, utf8: boolean): string {
  return TOKEN.test(value) || ADDRESS.test(value) ? value : quoted(value, utf8);
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

/**
 * One `method=result reason="..." ptype.property=value` clause. `utf8`: the
 * message is internationalized (its transaction used SMTPUTF8), so quoted
 * values keep their UTF-8 (an address such as `jöran@example.org`); otherwise
 * non-ASCII characters are replaced by `?`.
 */
export function resinfo(r: RecordedResult, utf8 = false): string {
  const { result } = r;
  let out = `${result.method ?? r.check}=${result.result}`;
  if (result.reason !== undefined) out += ` reason=${quoted(result.reason, utf8)}`;
  const { properties } = result;
  if (properties !== undefined)
    for (const key in properties) out += ` ${key}=${pvalue(properties[key] as string, utf8)}`;
  return out;
}

/**
 * `Authentication-Results: <authserv-id>; <resinfo>; ...`, one clause per
 * folded line, or `<authserv-id>; none` when no check reported (RFC 8601 2.2).
 */
export function authenticationResults(
  authservId: string,
  results: readonly RecordedResult[],
  utf8 = false,
): string {
  if (results.length === 0) return `Authentication-Results: ${authservId}; none`;
  return `Authentication-Results: ${authservId};\r\n\t${results.map((r) => resinfo(r, utf8)).join(';\r\n\t')}`;
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
