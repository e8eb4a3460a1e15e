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

/** `text` without its FWS (most names and list items have none: no copy then). */
function withoutFws(text: string): string {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) <= 32) return text.replace(FWS, '');
  return text;
}

const SP = 32;
const HTAB = 9;
const CR = 13;
const LF = 10;

/** `value` without the WSP and CRLFs at either end (a CR or LF alone stays). */
function trimFws(value: string): string {
  let start = 0;
  let end = value.length;
  for (;;) {
    const c = value.charCodeAt(start);
    if (c === SP || c === HTAB) start++;
    else if (c === CR && value.charCodeAt(start + 1) === LF) start += 2;
    else break;
  }
  while (end > start) {
    const c = value.charCodeAt(end - 1);
    if (c === SP || c === HTAB) end--;
    else if (c === LF && end - 2 >= start && value.charCodeAt(end - 2) === CR) end -= 2;
    else break;
  }
  return start === 0 && end === value.length ? value : value.slice(start, end);
}

/** A base64 value with its folding white space removed (`b=`, `bh=`, `p=`). */
export function base64Value(value: string): string {
  return value.replace(/[ \t\r\n]+/g, '');
}

/** A colon-separated list (`h=`, `s=` of a key record), each item trimmed. */
export function colonList(value: string): string[] {
  return value.split(':').map(withoutFws);
}
