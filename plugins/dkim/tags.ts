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
  if (specs.length > 1 && (specs[specs.length - 1] as string).replace(FWS, '') === '') specs.pop();
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    if (eq < 0) return undefined;
    const name = spec.slice(0, eq).replace(FWS, '');
    if (!TAG_NAME.test(name) || tags.has(name)) return undefined;
    tags.set(name, trimFws(spec.slice(eq + 1)));
  }
  return tags;
}

function trimFws(value: string): string {
  return value.replace(/^(?:[ \t]|\r\n)+/, '').replace(/(?:[ \t]|\r\n)+$/, '');
}

/** A base64 value with its folding white space removed (`b=`, `bh=`, `p=`). */
export function base64Value(value: string): string {
  return value.replace(/[ \t\r\n]+/g, '');
}

/** A colon-separated list (`h=`, `s=` of a key record), each item trimmed. */
export function colonList(value: string): string[] {
  return value.split(':').map((v) => v.replace(FWS, ''));
}
