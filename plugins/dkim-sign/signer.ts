/**
 * The DKIM signing computation (RFC 6376 3.4, 3.5, 3.7; RFC 8463 for
 * Ed25519): body hashed from a stream line by line, header fields selected
 * bottom-up, with oversigning (a name listed once more than it occurs, so a
 * field added later breaks the signature, RFC 6376 8.15).
 */
import { createHash, type KeyObject, sign } from 'node:crypto';
import type { Readable } from 'node:stream';

export type Canon = 'simple' | 'relaxed';

const WSP_RUN = /[ \t]+/g;

/** Canonicalises and hashes a body given in chunks (CRLF line endings, as the spool holds them). */
export class BodyHasher {
  readonly #hash = createHash('sha256');
  readonly #relaxed: boolean;
  #partial: Buffer = Buffer.alloc(0);
  #emptyLines = 0;
  #any = false;

  constructor(canon: Canon) {
    this.#relaxed = canon === 'relaxed';
  }

  update(chunk: Buffer): void {
    let data = this.#partial.length > 0 ? Buffer.concat([this.#partial, chunk]) : chunk;
    let start = 0;
    for (let nl = data.indexOf(10, start); nl >= 0; nl = data.indexOf(10, start)) {
      const end = nl > start && data[nl - 1] === 13 ? nl - 1 : nl;
      this.#line(data.subarray(start, end));
      start = nl + 1;
    }
    data = data.subarray(start);
    this.#partial = Buffer.from(data);
  }

  #line(raw: Buffer): void {
    let line = raw;
    if (this.#relaxed) {
      const text = raw.toString('latin1').replace(WSP_RUN, ' ').replace(/ $/, '');
      line = Buffer.from(text, 'latin1');
    }
    if (line.length === 0) {
      this.#emptyLines++;
      return;
    }
    for (; this.#emptyLines > 0; this.#emptyLines--) this.#hash.update('\r\n');
    this.#hash.update(line);
    this.#hash.update('\r\n');
    this.#any = true;
  }

  /** The `bh=` value. An empty body is CRLF in simple and nothing in relaxed canonicalisation (3.4.3, 3.4.4). */
  digest(): string {
    if (this.#partial.length > 0) this.#line(this.#partial);
    if (!this.#any && !this.#relaxed) this.#hash.update('\r\n');
    return this.#hash.digest('base64');
  }
}

/** One header field as it stands in the message (folded lines joined by CRLF, no final CRLF). */
export interface Field {
  readonly name: string;
  readonly raw: string;
}

/** The header section's fields, in order. */
export function parseFields(section: string): Field[] {
  const out: Field[] = [];
  for (const raw of section.replace(/\r\n$/, '').split(/\r\n(?![ \t])/)) {
    const colon = raw.indexOf(':');
    if (colon > 0) out.push({ name: raw.slice(0, colon).trim().toLowerCase(), raw });
  }
  return out;
}

function canonField(raw: string, canon: Canon): string {
  if (canon === 'simple') return raw;
  const colon = raw.indexOf(':');
  const name = raw.slice(0, colon).trim().toLowerCase();
  const value = raw
    .slice(colon + 1)
    .replace(/\r\n/g, '')
    .replace(WSP_RUN, ' ')
    .trim();
  return `${name}:${value}`;
}

export interface SignOptions {
  readonly domain: string;
  readonly selector: string;
  readonly key: KeyObject;
  readonly headerCanon: Canon;
  readonly bodyCanon: Canon;
  readonly bodyHash: string;
  /** Names to sign, lower case: every occurrence the message has. */
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
  for (const name of new Set(o.headers.map((n) => n.toLowerCase()))) {
    const n = fields.filter((f) => f.name === name).length + (o.oversign.has(name) ? 1 : 0);
    for (let i = 0; i < n; i++) h.push(name);
  }
  // Each listed name takes the next instance from the bottom; a name with none left adds nothing (5.4.2).
  const used = new Map<string, number>();
  let data = '';
  for (const name of h) {
    const instances = fields.filter((f) => f.name === name);
    const k = used.get(name) ?? 0;
    used.set(name, k + 1);
    const field = instances[instances.length - 1 - k];
    if (field) data += `${canonField(field.raw, o.headerCanon)}\r\n`;
  }
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
