/**
 * RFC 5321 section 4.1.2 paths and mailboxes, with the RFC 6531 section 3.3
 * (SMTPUTF8) extensions, and the EHLO/HELO domain check.
 *
 * Hand-written character loops: linear in the input, no backtracking regexes.
 */
import { isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';
import type { Address } from './types.ts';

export type AddressError = 'syntax' | 'too-long' | 'non-ascii';

export type PathResult =
  | { readonly ok: true; readonly address: Address | null; readonly rest: string }
  | { readonly ok: false; readonly error: AddressError };

export interface PathOptions {
  /** Allow UTF-8 in the local part and U-labels in the domain (SMTPUTF8). */
  readonly utf8: boolean;
  /** Accept the null reverse-path `<>` (MAIL). */
  readonly allowNull: boolean;
  /** Accept the domain-less `<Postmaster>` (RCPT). */
  readonly allowPostmaster: boolean;
}

/** RFC 5321 4.5.3.1.1 */
const MAX_LOCAL_PART = 64;
/** RFC 5321 4.5.3.1.2 */
const MAX_DOMAIN = 255;
/** RFC 5321 4.5.3.1.3, including the angle brackets. */
const MAX_PATH = 256;
/** RFC 1035 2.3.4 */
const MAX_LABEL = 63;

const SPACE = 0x20;
const QUOTE = 0x22;
const HYPHEN = 0x2d;
const DOT = 0x2e;
const COLON = 0x3a;
const LT = 0x3c;
const GT = 0x3e;
const AT = 0x40;
const OPEN_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const CLOSE_BRACKET = 0x5d;

function asciiTable(chars: string): Uint8Array {
  const table = new Uint8Array(128);
  for (let i = 0; i < chars.length; i++) table[chars.charCodeAt(i)] = 1;
  return table;
}

const ALNUM_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** RFC 5322 3.2.3 atext (ASCII part). */
const ATEXT = asciiTable(ALNUM_CHARS + "!#$%&'*+-/=?^_`{|}~");
/** Let-dig / Ldh-str characters. */
const LDH = asciiTable(ALNUM_CHARS + '-');
const ALNUM = asciiTable(ALNUM_CHARS);

const isAtext = (c: number): boolean => c < 128 && ATEXT[c] === 1;
const isLdh = (c: number): boolean => c < 128 && LDH[c] === 1;
const isLetDig = (c: number): boolean => c < 128 && ALNUM[c] === 1;
/** qtextSMTP: %d32-33 / %d35-91 / %d93-126 */
const isQtext = (c: number): boolean => c >= 32 && c <= 126 && c !== QUOTE && c !== BACKSLASH;
/** dcontent: %d33-90 / %d94-126 */
const isDcontent = (c: number): boolean => (c >= 33 && c <= 90) || (c >= 94 && c <= 126);
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;

/** UTF-8 octet count; `ascii` skips the work when the caller knows there is nothing to count. */
function octets(s: string, ascii: boolean): number {
  return ascii ? s.length : Buffer.byteLength(s, 'utf8');
}

function hasNonAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 128) return true;
  return false;
}

/**
 * Index of the `>` closing the path whose `<` is at `start`, skipping quoted
 * strings (which may hold `>`, spaces and escaped quotes); -1 when unclosed.
 */
export function findPathEnd(input: string, start: number): number {
  let quoted = false;
  for (let i = start + 1; i < input.length; i++) {
    const c = input.charCodeAt(i);
    if (quoted) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) quoted = false;
    } else if (c === QUOTE) quoted = true;
    else if (c === GT) return i;
  }
  return -1;
}

interface ParsedDomain {
  readonly ascii: string;
  readonly kind: Address['domainKind'];
  readonly unicode: boolean;
}

/** Labels of an A-label domain: LDH, no leading/trailing hyphen, 1-63 octets. */
function checkAsciiLabels(ascii: string, rawLabels: readonly string[]): AddressError | undefined {
  const labels = ascii.split('.');
  if (labels.length !== rawLabels.length) return 'syntax';
  for (let n = 0; n < labels.length; n++) {
    const label = labels[n]!;
    if (
      label.length === 0 ||
      label.charCodeAt(0) === HYPHEN ||
      label.charCodeAt(label.length - 1) === HYPHEN
    ) {
      return 'syntax';
    }
    for (let i = 0; i < label.length; i++) if (!isLdh(label.charCodeAt(i))) return 'syntax';
    // A non-ASCII label must become an A-label, not be mapped onto plain ASCII (full-width letters).
    if (hasNonAscii(rawLabels[n]!) && !label.startsWith('xn--')) return 'syntax';
    if (label.length > MAX_LABEL) return 'too-long';
  }
  return undefined;
}

/**
 * Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
 * (RFC 5321), or a U-label when `utf8` (RFC 6531).
 */
function parseDomainName(d: string, utf8: boolean): ParsedDomain | AddressError {
  let labelStart = 0;
  let labelAscii = true;
  let unicode = false;
  for (let i = 0; i <= d.length; i++) {
    const c = i < d.length ? d.charCodeAt(i) : DOT;
    if (c === DOT) {
      if (i === labelStart) return 'syntax';
      if (d.charCodeAt(labelStart) === HYPHEN || d.charCodeAt(i - 1) === HYPHEN) return 'syntax';
      const size = labelAscii ? i - labelStart : octets(d.slice(labelStart, i), false);
      if (size > MAX_LABEL) return 'too-long';
      labelStart = i + 1;
      labelAscii = true;
    } else if (c >= 128) {
      if (!utf8) return 'non-ascii';
      labelAscii = false;
      unicode = true;
    } else if (!isLdh(c)) {
      return 'syntax';
    }
  }
  if (octets(d, !unicode) > MAX_DOMAIN) return 'too-long';
  if (!unicode) return { ascii: d.toLowerCase(), kind: 'name', unicode: false };
  const ascii = domainToASCII(d);
  if (ascii === '') return 'syntax';
  const bad = checkAsciiLabels(ascii, d.split('.'));
  if (bad !== undefined) return bad;
  if (ascii.length > MAX_DOMAIN) return 'too-long';
  return { ascii, kind: 'name', unicode: true };
}

/** IPv4-address-literal = Snum 3("." Snum); Snum = 1*3DIGIT, 0-255. */
function isIPv4Literal(s: string): boolean {
  let parts = 0;
  let digits = 0;
  let value = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : DOT;
    if (c === DOT) {
      if (digits === 0 || value > 255) return false;
      parts++;
      digits = 0;
      value = 0;
    } else if (isDigit(c) && digits < 3) {
      value = value * 10 + (c - 0x30);
      digits++;
    } else {
      return false;
    }
  }
  return parts === 4;
}

/** Standardized-tag = Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig */
function isLdhStr(s: string): boolean {
  if (s.length === 0 || !isLetDig(s.charCodeAt(s.length - 1))) return false;
  for (let i = 0; i < s.length; i++) if (!isLdh(s.charCodeAt(i))) return false;
  return true;
}

/** address-literal = "[" ( IPv4 / "IPv6:" IPv6-addr / Standardized-tag ":" 1*dcontent ) "]" */
function parseAddressLiteral(d: string): ParsedDomain | AddressError {
  if (d.length < 3 || d.charCodeAt(d.length - 1) !== CLOSE_BRACKET) return 'syntax';
  if (d.length > MAX_DOMAIN) return 'too-long';
  const inner = d.slice(1, -1);
  const ascii = d.toLowerCase();
  const colon = inner.indexOf(':');
  if (colon === -1) return isIPv4Literal(inner) ? { ascii, kind: 'ipv4', unicode: false } : 'syntax';
  const tag = inner.slice(0, colon);
  const content = inner.slice(colon + 1);
  if (tag.toLowerCase() === 'ipv6') {
    for (let i = 0; i < content.length; i++) {
      const c = content.charCodeAt(i);
      // node's isIPv6 accepts zone ids (`%eth0`), which RFC 5321 IPv6-addr does not.
      if (!(isDigit(c) || c === COLON || c === DOT || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66)))
        return 'syntax';
    }
    return isIPv6(content) ? { ascii, kind: 'ipv6', unicode: false } : 'syntax';
  }
  if (!isLdhStr(tag) || content.length === 0) return 'syntax';
  for (let i = 0; i < content.length; i++) if (!isDcontent(content.charCodeAt(i))) return 'syntax';
  return { ascii, kind: 'general', unicode: false };
}

/**
 * Local-part "@" ( Domain / address-literal ), where Local-part is a
 * Dot-string or a Quoted-string. Checks the local-part and domain limits.
 */
function parseMailboxText(s: string, utf8: boolean): Address | AddressError {
  let i = 0;
  let localAscii = true;
  if (s.charCodeAt(0) === QUOTE) {
    // Quoted-string = DQUOTE *( qtextSMTP / "\" %d32-126 ) DQUOTE
    i = 1;
    for (;;) {
      if (i >= s.length) return 'syntax';
      const c = s.charCodeAt(i);
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        const next = s.charCodeAt(i + 1);
        if (!(next >= 32 && next <= 126)) return 'syntax';
        i += 2;
      } else if (isQtext(c)) {
        i++;
      } else if (c >= 128 && utf8) {
        localAscii = false;
        i++;
      } else {
        return c >= 128 ? 'non-ascii' : 'syntax';
      }
    }
    i++;
    if (s.charCodeAt(i) !== AT) return 'syntax';
  } else {
    // Dot-string = Atom *("." Atom)
    let atomStart = 0;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c === AT) break;
      if (c === DOT) {
        if (i === atomStart) return 'syntax';
        atomStart = i + 1;
      } else if (c >= 128) {
        if (!utf8) return 'non-ascii';
        localAscii = false;
      } else if (!isAtext(c)) {
        return 'syntax';
      }
    }
    if (i >= s.length || i === atomStart) return 'syntax';
  }
  const localPart = s.slice(0, i);
  const domain = s.slice(i + 1);
  if (domain.length === 0) return 'syntax';
  const parsed =
    domain.charCodeAt(0) === OPEN_BRACKET ? parseAddressLiteral(domain) : parseDomainName(domain, utf8);
  if (typeof parsed === 'string') return parsed;
  if (octets(localPart, localAscii) > MAX_LOCAL_PART) return 'too-long';
  return {
    localPart,
    domain,
    asciiDomain: parsed.ascii,
    domainKind: parsed.kind,
    address: s,
    unicode: !localAscii || parsed.unicode,
  };
}

/** A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain. The route itself is ignored. */
function checkRoute(route: string, utf8: boolean): AddressError | undefined {
  for (const hop of route.split(',')) {
    if (hop.charCodeAt(0) !== AT) return 'syntax';
    const parsed = parseDomainName(hop.slice(1), utf8);
    if (typeof parsed === 'string') return parsed;
  }
  return undefined;
}

function fail(error: AddressError): { readonly ok: false; readonly error: AddressError } {
  return { ok: false, error };
}

/**
 * Parse `<path>` at the start of `input` (leading spaces tolerated); `rest` is
 * the text after the closing `>` (ESMTP parameters), untrimmed.
 */
export function parsePath(input: string, opts: PathOptions): PathResult {
  let start = 0;
  while (input.charCodeAt(start) === SPACE) start++;
  if (input.charCodeAt(start) !== LT) return fail('syntax');
  const end = findPathEnd(input, start);
  const path = end === -1 ? input.slice(start) : input.slice(start, end + 1);
  const ascii = !hasNonAscii(path);
  if (!ascii && !opts.utf8) return fail('non-ascii');
  if (end === -1) return fail('syntax');
  const rest = input.slice(end + 1);
  let body = path.slice(1, -1);
  if (body.length === 0) return opts.allowNull ? { ok: true, address: null, rest } : fail('syntax');
  if (octets(path, ascii) > MAX_PATH) return fail('too-long');

  if (opts.allowPostmaster && body.length === 10 && body.toLowerCase() === 'postmaster') {
    const address: Address = {
      localPart: body,
      domain: '',
      asciiDomain: '',
      domainKind: 'name',
      address: body,
      unicode: false,
    };
    return { ok: true, address, rest };
  }

  if (body.charCodeAt(0) === AT) {
    const colon = body.indexOf(':');
    if (colon === -1) return fail('syntax');
    const bad = checkRoute(body.slice(0, colon), opts.utf8);
    if (bad !== undefined) return fail(bad);
    body = body.slice(colon + 1);
  }
  const address = parseMailboxText(body, opts.utf8);
  if (typeof address === 'string') return fail(address);
  return { ok: true, address, rest };
}

/** Parse a bare `local@domain` mailbox (no angle brackets). */
export function parseMailbox(
  input: string,
  opts: { readonly utf8: boolean },
): { ok: true; address: Address } | { ok: false; error: AddressError } {
  const ascii = !hasNonAscii(input);
  if (!ascii && !opts.utf8) return { ok: false, error: 'non-ascii' };
  const address = parseMailboxText(input, opts.utf8);
  if (typeof address === 'string') return { ok: false, error: address };
  // The path limit less its two angle brackets.
  if (octets(input, ascii) > MAX_PATH - 2) return { ok: false, error: 'too-long' };
  return { ok: true, address };
}

/**
 * Validate an EHLO/HELO argument: a domain (ASCII; IDNs as A-labels, RFC 6531
 * 3.7.1) or an address literal.
 */
export function isValidHeloDomain(input: string): boolean {
  if (input.length === 0) return false;
  const parsed =
    input.charCodeAt(0) === OPEN_BRACKET ? parseAddressLiteral(input) : parseDomainName(input, false);
  return typeof parsed !== 'string';
}

/**
 * The key a configured domain (a name, with U-labels or A-labels, or an
 * address literal) is compared with: the same lower-case ASCII form the
 * parser gives a recipient's `asciiDomain`, so `bücher.example` and
 * `xn--bcher-kva.example` are one domain. A final dot is dropped. Undefined
 * when the text is neither a domain name nor an address literal.
 */
export function domainKey(domain: string): string | undefined {
  const d = domain.endsWith('.') ? domain.slice(0, -1) : domain;
  if (d.length === 0) return undefined;
  const parsed = d.charCodeAt(0) === OPEN_BRACKET ? parseAddressLiteral(d) : parseDomainName(d, true);
  return typeof parsed === 'string' ? undefined : parsed.ascii;
}

/** The local part as a mailbox name: quotes and backslash escapes removed (`"a\"b"` is `a"b`). */
export function unquotedLocalPart(localPart: string): string {
  if (!localPart.startsWith('"')) return localPart;
  return localPart.slice(1, -1).replace(/\\(.)/g, '$1');
}

/** Whether an (unquoted) local part names a further destination: `%`, `!` or `@` in it (the `%` hack, a bang path). */
export function isRoutingLocalPart(local: string): boolean {
  return local.includes('%') || local.includes('!') || local.includes('@');
}
