/** DKIM tag lists (RFC 6376 section 3.2): `tag=value; tag=value`, in signatures and key records. */

/** Folding white space inside a tag list: WSP, and CRLF before WSP. */
const FWS = /[ \t]*\r\n[ \t]+|[ \t]+/g;
const TAG_NAME = /^[A-Za-z][A-Za-z0-9_]*$/;

/**
 * The tags of `text`, names as written (case matters, 3.2), values with
 * surrounding FWS removed; `undefined` when the list is malformed or names a
 * tag twice (both make a signature or key record unusable).
 */
export function parseTagList(text: string): Map<string, string> | undefined {
  const tags = new Map<string, string>();
  const specs = text.split(';');
  // A final ";" is allowed: the empty spec after it is not a tag.
  if (specs.length > 1 && withoutFws(specs[specs.length - 1] as string) === '') specs.pop();
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    if (eq < 0) return undefined;
    const name = withoutFws(spec.slice(0, eq));
    if (!TAG_NAME.test(name) || tags.has(name)) return undefined;
    tags.set(name, trimFws(spec.slice(eq + 1)));
  }
  return tags;
}

/** The tags of a DKIM-Signature that the verifier reads (RFC 6376 3.5), values as `parseTagList` gives them. */
export interface SignatureTags {
  v?: string;
  a?: string;
  b?: string;
  bh?: string;
  c?: string;
  d?: string;
  h?: string;
  i?: string;
  l?: string;
  q?: string;
  s?: string;
  t?: string;
  x?: string;
  /** Offset in the text of the `=` of `b=`, and of the end of its value (the next `;`, or the end). */
  bEquals: number;
  bEnd: number;
}

const EQUALS = 61;

/**
 * The tag list of a DKIM-Signature field from offset `from` of `text` (the
 * field, past its colon) in one pass: what `parseTagList` would give for the
 * tags the verifier reads (the same `undefined` for a malformed list or a
 * tag named twice, known or not), without a map of every tag, and with where
 * `b=`'s value lies (to delete it for the header hash, RFC 6376 3.7).
 */
export function parseSignatureTags(text: string, from: number): SignatureTags | undefined {
  const tags: SignatureTags = { bEquals: -1, bEnd: -1 };
  let others: string[] | undefined;
  const end = text.length;
  for (let pos = from; ; ) {
    const semi = text.indexOf(';', pos);
    const specEnd = semi < 0 ? end : semi;
    // A final ";" is allowed: the empty spec after it is not a tag.
    if (semi < 0 && pos > from && fwsOnly(text, pos, end)) return tags;
    // The name: FWS removed (around it and, as parseTagList does, inside it).
    let nameStart = -1;
    let nameEnd = -1;
    let gap = false;
    let i = pos;
    for (; i < specEnd; i++) {
      const c = text.charCodeAt(i);
      if (c === EQUALS) break;
      if (c === SP || c === HTAB) {
        if (nameStart >= 0) gap = true;
      } else if (c === CR && isFoldAt(text, i, specEnd)) {
        if (nameStart >= 0) gap = true;
        i++;
      } else {
        if (nameStart < 0) nameStart = i;
        else if (gap) nameEnd = -2; // FWS inside the name: the slow path below
        if (nameEnd !== -2) nameEnd = i + 1;
      }
    }
    if (i === specEnd || nameStart < 0) return undefined; // no "=", or no name before it
    const eq = i;
    const name = nameEnd === -2 ? withoutFws(text.slice(pos, eq)) : text.slice(nameStart, nameEnd);
    if (!isTagName(name)) return undefined;
    if (!setTag(tags, name, text, eq, specEnd)) {
      if (KNOWN.has(name)) return undefined; // named twice
      // Tags the verifier does not read are ignored, but not twice (3.2).
      others ??= [];
      if (others.includes(name)) return undefined;
      others.push(name);
    }
    if (semi < 0) return tags;
    pos = semi + 1;
  }
}

/** Whether `text[i]` starts a fold that FWS removal takes out: CRLF followed by WSP before `end`. */
function isFoldAt(text: string, i: number, end: number): boolean {
  if (text.charCodeAt(i + 1) !== LF || i + 2 >= end) return false;
  const next = text.charCodeAt(i + 2);
  return next === SP || next === HTAB;
}

/** Whether `text[start, end)` is nothing but FWS (WSP, and CRLF before WSP). */
function fwsOnly(text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === SP || c === HTAB) continue;
    if (c === CR && isFoldAt(text, i, end)) i++;
    else return false;
  }
  return true;
}

/** `ALPHA *(ALPHA / DIGIT / "_")` (3.2). */
function isTagName(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i) | 0x20;
    if (c >= 97 && c <= 122) continue;
    if (i === 0) return false;
    const d = name.charCodeAt(i);
    if (!((d >= 48 && d <= 57) || d === 95)) return false;
  }
  return name.length > 0;
}

const KNOWN = new Set<string>(['v', 'a', 'b', 'bh', 'c', 'd', 'h', 'i', 'l', 'q', 's', 't', 'x']);
type KnownTag = Exclude<keyof SignatureTags, 'bEquals' | 'bEnd'>;

/**
 * Keep the value of tag `name` (its `=` at `eq`, its spec ending at `end`)
 * when the verifier reads it and it is not set yet; false otherwise (an
 * unknown tag, or one named twice).
 */
function setTag(tags: SignatureTags, name: string, text: string, eq: number, end: number): boolean {
  if (!KNOWN.has(name)) return false;
  const tag = name as KnownTag;
  if (tags[tag] !== undefined) return false;
  tags[tag] = trimFws(text, eq + 1, end);
  if (tag === 'b') {
    tags.bEquals = eq;
    tags.bEnd = end;
  }
  return true;
}

/** `text` without its FWS (most names and list items have none: no copy then). */
function withoutFws(text: string): string {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) <= 32) return text.replace(FWS, '');
  return text;
}

const SP = 32;
const HTAB = 9;
const CR = 13;
const LF = 10;

/**
 * `text[start, end)` without the WSP and CRLFs at either end (a CR or LF
 * alone stays); the string itself when there is nothing to take off.
 */
export function trimFws(text: string, start = 0, end = text.length): string {
  for (;;) {
    const c = text.charCodeAt(start);
    if (start < end && (c === SP || c === HTAB)) start++;
    else if (start + 1 < end && c === CR && text.charCodeAt(start + 1) === LF) start += 2;
    else break;
  }
  while (end > start) {
    const c = text.charCodeAt(end - 1);
    if (c === SP || c === HTAB) end--;
    else if (c === LF && end - 2 >= start && text.charCodeAt(end - 2) === CR) end -= 2;
    else break;
  }
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

/** A base64 value with its folding white space removed (`b=`, `bh=`, `p=`). */
export function base64Value(value: string): string {
  // Usually one line: no copy then (searched natively, not octet by octet).
  return BASE64_FWS.test(value) ? value.replace(BASE64_FWS_ALL, '') : value;
}

const BASE64_FWS = /[ \t\r\n]/;
const BASE64_FWS_ALL = /[ \t\r\n]+/g;

/** A colon-separated list (`h=`, `s=` of a key record), each item trimmed. */
export function colonList(value: string): string[] {
  return value.split(':').map(withoutFws);
}
