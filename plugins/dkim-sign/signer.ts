/**
 * The DKIM signing computation (RFC 6376 3.4, 3.5, 3.7; RFC 8463 for
 * Ed25519): body hashed from a stream line by line, header fields selected
 * bottom-up, with oversigning (a name listed once more than it occurs, so a
 * field added later breaks the signature, RFC 6376 8.15).
 */
import { createHash, type KeyObject, sign } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BodyHasher, type Canon, canonField, type Field, signedHeaderData } from '../dkim/canon.ts';

export { type Canon, parseFields } from '../dkim/canon.ts';

export interface SignOptions {
  readonly domain: string;
  readonly selector: string;
  readonly key: KeyObject;
  readonly headerCanon: Canon;
  readonly bodyCanon: Canon;
  readonly bodyHash: string;
  /** Names to sign, lower case: every occurrence the message has (`from` is added when missing). */
  readonly headers: readonly string[];
  /** Names to sign once more than they occur. */
  readonly oversign: ReadonlySet<string>;
  /** Seconds since the epoch (`t=`). */
  readonly time: number;
}

/** The DKIM-Signature field for a message with `fields`, folded, without the final CRLF. */
export function signatureField(fields: readonly Field[], o: SignOptions): string {
  const ed = o.key.asymmetricKeyType === 'ed25519';
  const h: string[] = [];
  // From is always signed, whatever `headers` says (RFC 6376 5.4): named in h= even when absent.
  const names = o.headers.map((n) => n.toLowerCase());
  for (const name of new Set(names.includes('from') ? names : ['from', ...names])) {
    const n = fields.filter((f) => f.name === name).length + (o.oversign.has(name) ? 1 : 0);
    for (let i = 0; i < (name === 'from' ? Math.max(1, n) : n); i++) h.push(name);
  }
  let data = signedHeaderData(fields, h, o.headerCanon);
  const head =
    `DKIM-Signature: v=1; a=${ed ? 'ed25519-sha256' : 'rsa-sha256'}; c=${o.headerCanon}/${o.bodyCanon};` +
    ` d=${o.domain}; s=${o.selector};\r\n\tt=${o.time}; bh=${o.bodyHash};\r\n\th=${h.join(':')};\r\n\tb=`;
  data += canonField(head, o.headerCanon);
  const b = ed
    ? sign(null, createHash('sha256').update(data, 'latin1').digest(), o.key)
    : sign('sha256', Buffer.from(data, 'latin1'), o.key);
  return head + b.toString('base64');
}

/** Hash the body of a message stream (everything after the first empty line). */
export async function hashBody(stream: Readable, canon: Canon): Promise<string> {
  const hasher = new BodyHasher(canon);
  let inHeader = true;
  let tail = Buffer.alloc(0);
  for await (const c of stream) {
    const chunk = c as Buffer;
    if (!inHeader) {
      hasher.update(chunk);
      continue;
    }
    const joined = Buffer.concat([tail, chunk]);
    const end = joined.indexOf('\r\n\r\n');
    if (end < 0) {
      tail = joined.subarray(Math.max(0, joined.length - 3));
      continue;
    }
    inHeader = false;
    hasher.update(joined.subarray(end + 4));
  }
  return hasher.digest();
}
