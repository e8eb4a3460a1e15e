/**
 * SMTP command lines: the verb, the MAIL/RCPT argument and ESMTP parameters
 * (RFC 5321 4.1.1 and 4.1.2), and RFC 3461 xtext.
 */
import { type AddressError, findPathEnd, type PathOptions, parsePath } from '../address.ts';
import type { Address, Params } from '../types.ts';

export interface Command {
  /** The verb, ASCII upper-cased. */
  readonly verb: string;
  /** Text after the first space, as received except for trailing spaces. */
  readonly argument: string;
}

export type MailArgResult =
  | { ok: true; address: Address | null; params: Params }
  | { ok: false; error: AddressError | 'param-syntax' | 'prefix' };

const SPACE = 0x20;
const COLON = 0x3a;
const LT = 0x3c;
const EQUALS = 0x3d;
const PLUS = 0x2b;

/** Upper-case ASCII letters only (`'ſ'.toUpperCase()` is `'S'`, which must not make a verb). */
function asciiUpper(s: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x61 && c <= 0x7a) {
      out += s.slice(from, i) + String.fromCharCode(c - 0x20);
      from = i + 1;
    }
  }
  return from === 0 ? s : out + s.slice(from);
}

/** The index after the run of spaces starting at `i`. */
function skipSpaces(s: string, i: number): number {
  while (s.charCodeAt(i) === SPACE) i++;
  return i;
}

/** The index just past the last non-space character. */
function endWithoutSpaces(s: string): number {
  let end = s.length;
  while (end > 0 && s.charCodeAt(end - 1) === SPACE) end--;
  return end;
}

/** Split a command line (without CRLF) into its verb and argument. */
export function parseCommand(line: string): Command {
  const space = line.indexOf(' ');
  if (space === -1) return { verb: asciiUpper(line), argument: '' };
  const verb = asciiUpper(line.slice(0, space));
  const argument = line.slice(space + 1, Math.max(space + 1, endWithoutSpaces(line)));
  return { verb, argument };
}

/** Whether `argument` starts with `FROM:` / `TO:`, case-insensitively. */
function hasPrefix(argument: string, prefix: 'FROM' | 'TO'): boolean {
  const n = prefix.length;
  if (argument.charCodeAt(n) !== COLON) return false;
  for (let i = 0; i < n; i++) {
    if ((argument.charCodeAt(i) & ~0x20) !== prefix.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Split a MAIL (`FROM:<path> params`) or RCPT (`TO:<path> params`) argument
 * without validating the path, so the caller can read the parameters first
 * (SMTPUTF8 decides whether the path may hold UTF-8). `pathText` runs from `<`
 * to the matching `>`; `paramsText` is the rest without surrounding spaces.
 * Undefined when the prefix is wrong, the path is unclosed, or the path is not
 * followed by a space or the end.
 */
export function peekParams(
  argument: string,
  prefix: 'FROM' | 'TO',
): { pathText: string; paramsText: string } | undefined {
  if (!hasPrefix(argument, prefix)) return undefined;
  const start = skipSpaces(argument, prefix.length + 1);
  if (argument.charCodeAt(start) !== LT) return undefined;
  const end = findPathEnd(argument, start);
  if (end === -1) return undefined;
  const after = end + 1;
  if (after < argument.length && argument.charCodeAt(after) !== SPACE) return undefined;
  const paramsStart = skipSpaces(argument, after);
  const paramsEnd = Math.max(paramsStart, endWithoutSpaces(argument));
  return { pathText: argument.slice(start, after), paramsText: argument.slice(paramsStart, paramsEnd) };
}

/**
 * Parse the argument of MAIL (`FROM:<path> params`) or RCPT (`TO:<path> params`).
 * The prefix is case-insensitive and spaces may follow the colon.
 */
export function parseMailArgument(argument: string, prefix: 'FROM' | 'TO', opts: PathOptions): MailArgResult {
  if (!hasPrefix(argument, prefix)) return { ok: false, error: 'prefix' };
  const parts = peekParams(argument, prefix);
  if (parts === undefined) return { ok: false, error: 'syntax' };
  const path = parsePath(parts.pathText, opts);
  if (!path.ok) return { ok: false, error: path.error };
  const params = parseParams(parts.paramsText, opts.utf8);
  if (params === undefined) return { ok: false, error: 'param-syntax' };
  return { ok: true, address: path.address, params };
}

const isAlnum = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);

/**
 * Parse ESMTP parameters (RFC 5321 4.1.2): esmtp-keyword ["=" esmtp-value],
 * separated by spaces. Keywords are upper-cased; a keyword without a value maps
 * to `true`. UTF-8 is allowed in values when `utf8` (RFC 6531 3.3). Undefined on
 * a syntax error or a repeated keyword.
 */
export function parseParams(text: string, utf8: boolean): Map<string, string | true> | undefined {
  const params = new Map<string, string | true>();
  let i = skipSpaces(text, 0);
  while (i < text.length) {
    // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    const keywordStart = i;
    if (!isAlnum(text.charCodeAt(i))) return undefined;
    i++;
    while (i < text.length && (isAlnum(text.charCodeAt(i)) || text.charCodeAt(i) === 0x2d)) i++;
    const keyword = text.slice(keywordStart, i).toUpperCase();
    let value: string | true = true;
    if (text.charCodeAt(i) === EQUALS) {
      // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF8-non-ascii with SMTPUTF8
      const valueStart = ++i;
      for (; i < text.length; i++) {
        const c = text.charCodeAt(i);
        if (c === SPACE) break;
        if (c >= 128 ? !utf8 : c < 33 || c === EQUALS || c > 126) return undefined;
      }
      if (i === valueStart) return undefined;
      value = text.slice(valueStart, i);
    } else if (i < text.length && text.charCodeAt(i) !== SPACE) {
      return undefined;
    }
    if (params.has(keyword)) return undefined;
    params.set(keyword, value);
    i = skipSpaces(text, i);
  }
  return params;
}

/** Value of an upper-case hex digit (RFC 3461 hexchar), or -1. */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Decode RFC 3461 xtext: xchar is %d33-126 except "+" and "="; hexchar is "+"
 * and two upper-case hex digits. Octets above 127 must form valid UTF-8.
 * Undefined if malformed.
 */
export function decodeXtext(s: string): string | undefined {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === PLUS) {
      if (hexValue(s.charCodeAt(i + 1)) === -1 || hexValue(s.charCodeAt(i + 2)) === -1) return undefined;
      plain = false;
      i += 2;
    } else if (c < 33 || c > 126 || c === EQUALS) {
      return undefined;
    }
  }
  if (plain) return s;
  const bytes = new Uint8Array(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === PLUS) {
      bytes[n++] = hexValue(s.charCodeAt(i + 1)) * 16 + hexValue(s.charCodeAt(i + 2));
      i += 2;
    } else {
      bytes[n++] = c;
    }
  }
  try {
    return utf8Decoder.decode(bytes.subarray(0, n));
  } catch {
    return undefined;
  }
}
