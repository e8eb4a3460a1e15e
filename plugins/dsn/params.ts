/**
 * Parsers for the DSN parameters (RFC 3461 section 4, RFC 6533 for `utf-8`
 * ORCPT). Each returns the decoded value, or `undefined` when malformed.
 */
import { decodeXtext } from '../../core/codec/command.ts';
import type { EnvelopeDsn, NotifyCondition, OriginalRecipient } from './attributes.ts';

/** RFC 3461 section 4.4: ENVID is at most 100 characters. */
export const MAX_ENVID = 100;
/** RFC 3461 section 4.2: ORCPT is at most 500 characters. */
export const MAX_ORCPT = 500;

/** Printable US-ASCII, space included: what ENVID and an rfc822 ORCPT must decode to. */
const PRINTABLE = /^[\x20-\x7e]+$/;
/** RFC 5322 atom characters, as RFC 3461 defines addr-type. */
const ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$/;
const NOTIFY_LIST = new Set<NotifyCondition>(['SUCCESS', 'FAILURE', 'DELAY']);

export function parseRet(value: string): EnvelopeDsn['ret'] | undefined {
  const v = value.toUpperCase();
  return v === 'FULL' || v === 'HDRS' ? v : undefined;
}

export function parseEnvid(value: string): string | undefined {
  if (value.length > MAX_ENVID) return undefined;
  const decoded = decodeXtext(value);
  return decoded !== undefined && PRINTABLE.test(decoded) ? decoded : undefined;
}

/** `NEVER`, or a comma list of SUCCESS, FAILURE and DELAY without repeats. */
export function parseNotify(value: string): NotifyCondition[] | undefined {
  const items = value.toUpperCase().split(',');
  if (items.length === 1 && items[0] === 'NEVER') return ['NEVER'];
  const out: NotifyCondition[] = [];
  for (const item of items) {
    const condition = item as NotifyCondition;
    if (!NOTIFY_LIST.has(condition) || out.includes(condition)) return undefined;
    out.push(condition);
  }
  return out;
}

/**
 * `addr-type ";" xtext`. For `utf-8` (RFC 6533 section 3) the address may also
 * hold `\x{HEX}` escapes and, in an SMTPUTF8 transaction, raw UTF-8.
 */
export function parseOrcpt(value: string, utf8: boolean): OriginalRecipient | undefined {
  if (value.length > MAX_ORCPT) return undefined;
  const semi = value.indexOf(';');
  if (semi <= 0) return undefined;
  const type = value.slice(0, semi);
  if (!ATOM.test(type)) return undefined;
  const encoded = value.slice(semi + 1);
  const lowerType = type.toLowerCase();
  const address = lowerType === 'utf-8' ? decodeUtf8Addr(encoded, utf8) : decodeXtext(encoded);
  if (address === undefined || address === '') return undefined;
  if (lowerType !== 'utf-8' && !PRINTABLE.test(address)) return undefined;
  return { type: lowerType, address };
}

const EMBEDDED = /\\x\{([0-9A-F]{2,6})\}/g;

/**
 * RFC 6533 utf-8-addr-xtext (ASCII, `\x{HEX}` for the rest) or, when the
 * transaction uses SMTPUTF8, utf-8-addr-unitext (raw UTF-8 allowed).
 */
function decodeUtf8Addr(encoded: string, utf8: boolean): string | undefined {
  let ascii = true;
  for (let i = 0; i < encoded.length; i++) if (encoded.charCodeAt(i) > 0x7e) ascii = false;
  let text: string | undefined;
  if (ascii) text = decodeXtext(encoded);
  else if (utf8 && !/[+=]/.test(encoded)) text = encoded;
  if (text === undefined) return undefined;
  let bad = false;
  const decoded = text.replace(EMBEDDED, (_m, hex: string) => {
    const cp = Number.parseInt(hex, 16);
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      bad = true;
      return '';
    }
    return String.fromCodePoint(cp);
  });
  if (bad || /[\x00-\x1f\x7f]/.test(decoded)) return undefined;
  return decoded;
}
