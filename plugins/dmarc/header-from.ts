/** The RFC5322.From domains of a message, from its header section. */
import type { Message, Transaction } from '../../core/types.ts';
import { messageHeader } from '../policy/message-header.ts';
import { headerSection } from '../policy/message-source.ts';

const FROM = /^from[ \t]*:(.*)$/is;

/** The `From:` fields' unfolded values. */
export function fromFields(header: string): string[] {
  const out: string[] = [];
  for (const field of header.split(/\r\n(?![ \t])/)) {
    const m = FROM.exec(field);
    if (m?.[1] !== undefined) out.push(m[1].replace(/\r\n/g, ''));
  }
  return out;
}

/** The same from a header section parsed already (`messageHeader` of `mailframe/policy`). */
export function fromFieldsOf(header: {
  readonly fields: readonly { name: string; raw: string }[];
}): string[] {
  const out: string[] = [];
  for (const field of header.fields) {
    if (field.name !== 'from') continue;
    const m = FROM.exec(field.raw);
    if (m?.[1] !== undefined) out.push(m[1].replace(/\r\n/g, ''));
  }
  return out;
}

/**
 * The From fields' values of `message`: from the header section parsed once
 * for every check (`messageHeader`), else from the first `maxHeaderSize`
 * octets of the header section read from the message.
 */
export async function readFromFields(
  tx: Transaction,
  message: Message,
  maxHeaderSize: number,
): Promise<string[]> {
  const header = await messageHeader(tx, message);
  if (header !== undefined && header.text.length <= maxHeaderSize) return fromFieldsOf(header);
  return fromFields((await headerSection(message, maxHeaderSize)).toString('latin1'));
}

/**
 * Author domains of one From value (lower case): those of every mailbox, in
 * `<a@b>` form or bare `a@b` form, mixed as a mailbox-list may mix them
 * (RFC 5322 3.4; RFC 7489 6.6.1 must see every author).
 */
export function authorDomains(value: string): string[] {
  const one = oneAngleAddressDomain(value);
  if (one !== undefined) return one === '' ? [] : [one];
  // Most values have neither comments nor quoted strings: no copies then.
  const noComments =
    value.includes('(') || value.includes('"')
      ? value.replace(/\([^()]*\)/g, ' ').replace(/"(?:[^"\\]|\\.)*"/g, '""')
      : value;
  const angle = [...noComments.matchAll(/<[^<>@]*@([^<>\s]+)>/g)].map((m) => m[1] ?? '');
  // Bare addr-specs: outside the angle brackets (a display name has no unquoted "@").
  const rest = angle.length > 0 ? noComments.replace(/<[^<>]*>/g, ' ') : noComments;
  // Split first, then look in each piece: a regex scanning for `local@domain` backtracks over every
  // start of a long run without "@", quadratic in a From field the sender writes.
  const bare: string[] = [];
  for (const piece of rest.split(/[\s,<>;]+/)) {
    const at = piece.lastIndexOf('@');
    // A local-part before it (after a group's "name:"), a domain after it.
    if (at > piece.lastIndexOf(':', at) + 1) bare.push(piece.slice(at + 1));
  }
  return [...angle, ...bare].map((d) => d.toLowerCase().replace(/\.$/, '')).filter((d) => d !== '');
}

/**
 * The addr-specs of one From value (RFC 5322 3.4 mailbox-list, or a group),
 * as written: `local@domain` with a quoted local part kept quoted, comments
 * and folding white space outside quoted strings left out, a display name and
 * a group's name dropped. For a check of who the authors are (whole
 * addresses, not only domains); a piece with no `@` is left out.
 */
export function authorMailboxes(value: string): string[] {
  const out: string[] = [];
  let piece = '';
  let angle: string | undefined;
  let inAngle = false;
  const end = (): void => {
    const spec = angle ?? piece;
    if (spec.includes('@')) out.push(spec);
    piece = '';
    angle = undefined;
  };
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    if (c === '"') {
      // A quoted string, escapes and all, as one token.
      let j = i + 1;
      while (j < value.length && value[j] !== '"') j += value[j] === '\\' ? 2 : 1;
      const quoted = value.slice(i, j + 1);
      if (inAngle) angle += quoted;
      else piece += quoted;
      i = j;
    } else if (c === '(') {
      // A comment (they nest), left out.
      let depth = 1;
      let j = i + 1;
      for (; j < value.length && depth > 0; j++) {
        if (value[j] === '\\') j++;
        else if (value[j] === '(') depth++;
        else if (value[j] === ')') depth--;
      }
      i = j - 1;
    } else if (c === '<' && !inAngle) {
      inAngle = true;
      angle = '';
    } else if (c === '>' && inAngle) {
      inAngle = false;
      // An obsolete source route (`@a,@b:`) before the address is not part of it.
      const route = (angle as string).lastIndexOf(':');
      if (route >= 0 && (angle as string).startsWith('@')) angle = (angle as string).slice(route + 1);
    } else if (inAngle) {
      if (c !== ' ' && c !== '\t') angle += c;
    } else if (c === ',' || c === ';') end();
    // What came before is a group's name.
    else if (c === ':') piece = '';
    else if (c !== ' ' && c !== '\t') piece += c;
  }
  end();
  return out;
}

/**
 * The common From value, `Display Name <local@domain>` (one mailbox in angle
 * brackets, no comment, quoted string, list or group), read without regular
 * expressions: its author domain as `authorDomains` gives it ('' for none),
 * or undefined when the value is not of that shape (the general path reads it).
 */
function oneAngleAddressDomain(value: string): string | undefined {
  const open = value.indexOf('<');
  if (open < 0) return undefined;
  const close = value.indexOf('>', open + 1);
  if (close < 0 || value.indexOf('<', open + 1) >= 0 || value.indexOf('>', close + 1) >= 0) return undefined;
  // Before `<`: a display name of plain words (an "@" there would be a bare addr-spec; the rest a list or group).
  for (let i = 0; i < open; i++) {
    const c = value.charCodeAt(i);
    if (c === AT || c === LPAREN || c === DQUOTE || c === COMMA || c === SEMI || c === COLON || c === GT)
      return undefined;
  }
  // After `>`: nothing but WSP.
  for (let i = close + 1; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c !== SP && c !== HTAB) return undefined;
  }
  // Inside: `local@domain`, the local part without "@", the domain without WSP, CR or LF (as `\s` would find).
  const at = value.indexOf('@', open + 1);
  if (at < 0 || at > close) return undefined;
  for (let i = open + 1; i < close; i++) {
    const c = value.charCodeAt(i);
    if (c === LPAREN || c === DQUOTE || c <= SP || c >= 127) return undefined;
  }
  // The first "@" ends the local part (`<a@b@c>`: domain `b@c`), as in the general path.
  const domain = value.slice(at + 1, close).toLowerCase();
  if (domain === '') return undefined;
  return domain.charCodeAt(domain.length - 1) === DOT ? domain.slice(0, -1) : domain;
}

const SP = 32;
const HTAB = 9;
const AT = 64;
const LPAREN = 40;
const DQUOTE = 34;
const COMMA = 44;
const SEMI = 59;
const COLON = 58;
const GT = 62;
const DOT = 46;
