/**
 * DKIM canonicalisation (RFC 6376 section 3.4), shared by the signer
 * (`dkim-sign`) and the verifier (`dkim-verify`): header fields as they stand
 * in the message, "simple" and "relaxed" header canonicalisation, and a body
 * hasher fed in chunks, with the `l=` body length limit.
 */
import { createHash, type Hash, hash } from 'node:crypto';
import { fieldName, parseHeaderFields } from '../policy/message-header.ts';
import { trimFws } from './tags.ts';

export type Canon = 'simple' | 'relaxed';

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const CRLF = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);
/** Octets collected before each update of the body hash (under 4 KiB: the staging buffer comes from Node's pool). */
const STAGE_SIZE = 4000;

/**
 * Canonicalises and hashes a body given in chunks (CRLF line endings, as the
 * spool holds them). With `limit`, only the first `limit` octets of the
 * canonical body are hashed (the `l=` tag, RFC 6376 3.5).
 */
export class BodyHasher {
  /** Created at the first full staging block: a body that fits in one is hashed in one call (`digest`). */
  #hash: Hash | undefined;
  readonly #relaxed: boolean;
  readonly #limit: number;
  #partial: Buffer = EMPTY;
  #emptyLines = 0;
  #any = false;
  /** Canonical octets seen (all of them, hashed or not past the limit). */
  #length = 0;
  /** Canonical octets not yet given to the hash (`#stage`). */
  #staging: Buffer | undefined;
  #staged = 0;
  #digest: string | undefined;

  constructor(canon: Canon, limit = Number.POSITIVE_INFINITY) {
    this.#relaxed = canon === 'relaxed';
    this.#limit = limit;
  }

  /** Octets of the canonical body so far (after `digest`: the whole canonical body). */
  get length(): number {
    return this.#length;
  }

  update(chunk: Buffer): void {
    const data = this.#partial.length > 0 ? Buffer.concat([this.#partial, chunk]) : chunk;
    // Searched natively once for the chunk, not octet by octet for each line.
    const clean = !this.#relaxed || relaxedCleanChunk(data);
    let start = 0;
    // Most lines are canonical as they stand (CRLF-terminated, not empty, and for relaxed without
    // WSP to fold): a run of them is hashed as one range of `data`, not copied line by line.
    let run = -1;
    for (let nl = data.indexOf(LF, start); nl >= 0; nl = data.indexOf(LF, start)) {
      const crlf = nl > start && data[nl - 1] === CR;
      const end = crlf ? nl - 1 : nl;
      if (crlf && end > start && (clean || relaxedClean(data, start, end))) {
        if (run < 0) {
          // Empty lines before it count now that something follows them.
          for (; this.#emptyLines > 0; this.#emptyLines--) this.#emit(CRLF);
          this.#any = true;
          run = start;
        }
      } else {
        if (run >= 0) this.#emit(data.subarray(run, start));
        run = -1;
        this.#line(data.subarray(start, end));
      }
      start = nl + 1;
    }
    if (run >= 0) this.#emit(data.subarray(run, start));
    // The unfinished line is copied: the caller may reuse its chunk.
    this.#partial = start < data.length ? Buffer.from(data.subarray(start)) : EMPTY;
  }

  #line(raw: Buffer): void {
    const line = this.#relaxed ? relaxedLine(raw) : raw;
    if (line.length === 0) {
      this.#emptyLines++;
      return;
    }
    // Empty lines count only once something follows them (trailing empty lines are dropped).
    for (; this.#emptyLines > 0; this.#emptyLines--) this.#emit(CRLF);
    this.#emit(line);
    this.#emit(CRLF);
    this.#any = true;
  }

  #emit(octets: Buffer): void {
    const room = this.#limit - this.#length;
    if (room >= octets.length) this.#stage(octets);
    else if (room > 0) this.#stage(octets.subarray(0, room));
    this.#length += octets.length;
  }

  /** Collect octets to hash: one `update` per `STAGE_SIZE` octets, not two per line. */
  #stage(octets: Buffer): void {
    if (this.#staged + octets.length > STAGE_SIZE) {
      this.#flush();
      if (octets.length > STAGE_SIZE) {
        this.#hash ??= createHash('sha256');
        this.#hash.update(octets);
        return;
      }
    }
    this.#staging ??= Buffer.allocUnsafe(STAGE_SIZE);
    if (octets.length === 2 && octets === CRLF) {
      this.#staging[this.#staged] = CR;
      this.#staging[this.#staged + 1] = LF;
    } else octets.copy(this.#staging, this.#staged);
    this.#staged += octets.length;
  }

  #flush(): void {
    if (this.#staged > 0 && this.#staging) {
      this.#hash ??= createHash('sha256');
      this.#hash.update(this.#staging.subarray(0, this.#staged));
    }
    this.#staged = 0;
  }

  /**
   * The `bh=` value, once the whole body has been given (later calls answer
   * the same). An empty body is CRLF in simple and nothing in relaxed
   * canonicalisation (3.4.3, 3.4.4).
   */
  digest(): string {
    this.#digest ??= this.#finish();
    return this.#digest;
  }

  #finish(): string {
    if (this.#partial.length > 0) this.#line(this.#partial);
    this.#partial = EMPTY;
    if (!this.#any && !this.#relaxed) this.#emit(CRLF);
    if (this.#hash === undefined)
      return hash('sha256', this.#staging?.subarray(0, this.#staged) ?? EMPTY, 'base64');
    this.#flush();
    return this.#hash.digest('base64');
  }
}

/** Whether the line `data[start, end)` is the same in relaxed canonicalisation: no HTAB, no SP before WSP or at the end. */
function relaxedClean(data: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = data[i];
    if (c === HTAB || (c === SP && (i + 1 === end || data[i + 1] === SP || data[i + 1] === HTAB)))
      return false;
  }
  return true;
}

/** Whether every line of `data` is the same in relaxed canonicalisation (no HTAB, no SP before SP or CR). */
function relaxedCleanChunk(data: Buffer): boolean {
  return data.indexOf(HTAB) < 0 && data.indexOf(SP_SP) < 0 && data.indexOf(SP_CR) < 0;
}

const SP_SP = Buffer.from('  ');
const SP_CR = Buffer.from(' \r');

/**
 * One body line in relaxed canonicalisation: every run of WSP becomes one
 * space, WSP at the end goes. Most lines need no change and are returned as is.
 */
function relaxedLine(raw: Buffer): Buffer {
  if (relaxedClean(raw, 0, raw.length)) return raw;
  const out = Buffer.allocUnsafe(raw.length);
  let n = 0;
  let space = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i] as number;
    if (c === SP || c === HTAB) {
      space = true;
      continue;
    }
    if (space) {
      out[n++] = SP;
      space = false;
    }
    out[n++] = c;
  }
  return out.subarray(0, n);
}

/** One header field as it stands in the message (folded lines joined by CRLF, no final CRLF). */
export interface Field {
  /** Lower case, without surrounding WSP. */
  readonly name: string;
  readonly raw: string;
}

/** The header section's fields, in order (the section as text, latin1: one char per octet). */
export function parseFields(section: string): Field[] {
  return parseHeaderFields(section);
}

const WSP_RUN = /[ \t]+/g;

/** A field in `canon` canonicalisation, without the final CRLF (RFC 6376 3.4.1, 3.4.2). */
export function canonField(raw: string, canon: Canon): string {
  if (canon === 'simple') return raw;
  const colon = raw.indexOf(':');
  return `${canonName(raw.slice(0, colon))}:${relaxedValue(raw, colon + 1)}`;
}

/** A field name in relaxed canonicalisation: runs of WSP become one SP in the unfolded name too (3.4.2). */
function canonName(name: string): string {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === SP || c === HTAB || c === CR || c === LF)
      return fieldName(name.replace(/\r\n/g, '')).replace(WSP_RUN, ' ');
  }
  return fieldName(name);
}

/**
 * The value of `raw` from `from` in relaxed canonicalisation: unfolded (every
 * CRLF removed), runs of WSP as one SP, no WSP at either end. Only WSP is white
 * space here: `trim()` would also take U+00A0, the last octet of many UTF-8
 * characters.
 */
function relaxedValue(raw: string, from: number): string {
  // Both ends are then other octets: what lies between changes only at an HTAB, a CR or two SPs.
  const value = trimFws(raw, from);
  if (!NOT_RELAXED.test(value)) return value;
  return value.replace(CRLF_ALL, '').replace(WSP_RUN, ' ');
}

const NOT_RELAXED = /[\t\r]| {2}/;
const CRLF_ALL = /\r\n/g;

/**
 * The header data a signature covers (RFC 6376 5.4.2): for each name of `h`,
 * the next instance of that field from the bottom, canonicalised, each with
 * its CRLF; a name with no instance left adds nothing.
 */
export function signedHeaderData(fields: readonly Field[], h: readonly string[], canon: Canon): string {
  // Per name: the index of the instance used last; the next is searched above it.
  const used = new Map<string, number>();
  let data = '';
  for (const listed of h) {
    const name = fieldName(listed);
    let i = (used.get(name) ?? fields.length) - 1;
    while (i >= 0 && (fields[i] as Field).name !== name) i--;
    used.set(name, Math.max(i, 0));
    if (i >= 0) data += `${canonField((fields[i] as Field).raw, canon)}\r\n`;
  }
  return data;
}
