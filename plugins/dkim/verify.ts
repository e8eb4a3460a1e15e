/**
 * A streaming DKIM verifier (RFC 6376; Ed25519-SHA256 by RFC 8463; RSA-SHA1
 * refused by RFC 8301). One pass over the message: the header section is
 * collected, every DKIM-Signature field (up to a cap) is parsed and its key
 * lookup started at once (through the injected `lookup`: the server's DNS
 * resolver and its cache), then the body streams through one hasher per
 * distinct body canonicalisation and `l=`; nothing holds the body. Each
 * signature gets an RFC 8601 result value:
 *
 *   pass       body hash and signature verify
 *   fail       body hash or signature does not verify
 *   neutral    expired (`x=`) or dated in the future (`t=`)
 *   permerror  unusable signature (syntax, unknown algorithm, rsa-sha1) or key (absent, revoked, weak, malformed)
 *   temperror  the key lookup failed for now (SERVFAIL, timeout)
 */
import { createPublicKey, hash, type KeyObject, verify } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { DnsResult } from '../../core/dns/types.ts';
import type { MessageHeader } from '../policy/message-header.ts';
import { BodyHasher, type Canon, canonField, type Field, parseFields, signedHeaderData } from './canon.ts';
import { base64Value, colonList, parseSignatureTags, parseTagList } from './tags.ts';

export type DkimVerdict = 'pass' | 'fail' | 'neutral' | 'permerror' | 'temperror';

/** One signature's outcome. */
export interface SignatureVerdict {
  readonly result: DkimVerdict;
  /** Why, when not `pass`. */
  readonly reason?: string;
  /** `d=`, lower case. */
  readonly domain?: string;
  /** `s=`. */
  readonly selector?: string;
  /** `a=`. */
  readonly algorithm?: string;
  /** `i=`, or `@d` when absent. */
  readonly identity?: string;
  /** The first characters of `b=`, enough to tell signatures apart (RFC 6008). */
  readonly b?: string;
  /** `l=`: the signature covers only this many octets of the canonical body. */
  readonly bodyLength?: number;
  /** The key record has `t=y`: the domain is testing DKIM. */
  readonly testing?: boolean;
}

export interface Verification {
  /** One verdict per DKIM-Signature field checked, top of the header first. */
  readonly signatures: readonly SignatureVerdict[];
  /** Signatures past `maxSignatures`, not checked. */
  readonly skipped: number;
}

/**
 * How the verifier gets a key record: the TXT records of `name`
 * (`<s>._domainkey.<d>`), e.g. `(name) => server.dns.lookup(name, 'TXT')`.
 * Injected so the same code runs on the event loop and in a worker thread
 * that asks the main thread (see plugins/dkim-verify/threads.ts).
 */
export type KeyLookup = (name: string) => Promise<DnsResult<string>>;

export interface VerifyOptions {
  readonly lookup: KeyLookup;
  /** Milliseconds since the epoch (the server's clock). */
  readonly now: number;
  /** RSA keys shorter than this are `permerror` (RFC 8301 3.2). */
  readonly minKeyBits: number;
  /** Signatures checked per message; the rest are counted in `skipped`. */
  readonly maxSignatures: number;
  /** Seconds a `t=` may lie in the future (clocks differ) before the signature is `neutral`. */
  readonly clockSkew: number;
  /**
   * The key record at once when it is cached (e.g. the server resolver's
   * `cached`), so a message whose keys are all cached is verified without a
   * promise; undefined or no answer: `lookup`.
   */
  readonly cachedLookup?: (name: string) => DnsResult<string> | undefined;
  /** Parsed public keys by key record (shared between messages). */
  readonly keys: KeyCache;
  /**
   * Run the public-key operations on libuv's thread pool (`crypto.verify` with
   * a callback) instead of on the event loop (default false).
   */
  readonly threadPool?: boolean;
}

/** Public keys parsed from key records, least recently used evicted first. */
export class KeyCache {
  readonly #capacity: number;
  /** By key record; parsed for one `minKeyBits` (another parses it again). */
  readonly #entries = new Map<string, { readonly minKeyBits: number; readonly parsed: ParsedKey }>();

  constructor(capacity = 256) {
    this.#capacity = capacity;
  }

  get(record: string, minKeyBits: number): ParsedKey {
    const found = this.#entries.get(record);
    let parsed: ParsedKey;
    if (found !== undefined && found.minKeyBits === minKeyBits) {
      parsed = found.parsed;
      this.#entries.delete(record);
    } else {
      parsed = parseKeyRecord(record, minKeyBits);
      if (this.#capacity <= 0) return parsed;
      this.#entries.delete(record);
    }
    this.#entries.set(record, { minKeyBits, parsed });
    if (this.#entries.size > this.#capacity) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    return parsed;
  }
}

type KeyType = 'rsa' | 'ed25519';

/** A key record (RFC 6376 3.6.1) made usable, or why it is not. */
type ParsedKey =
  | {
      readonly ok: true;
      readonly type: KeyType;
      readonly key: KeyObject;
      readonly hashes: readonly string[] | undefined;
      readonly testing: boolean;
      /** `t=s`: the `i=` domain must be `d=` itself. */
      readonly strict: boolean;
    }
  | { readonly ok: false; readonly reason: string };

/** The DER SubjectPublicKeyInfo prefix of an Ed25519 key: `p=` holds only the 32 key octets (RFC 8463 4.2). */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function parseKeyRecord(record: string, minKeyBits: number): ParsedKey {
  const tags = parseTagList(record);
  if (!tags) return { ok: false, reason: 'invalid key record' };
  const v = tags.get('v');
  if (v !== undefined && v !== 'DKIM1') return { ok: false, reason: 'unknown key version' };
  const k = (tags.get('k') ?? 'rsa').toLowerCase();
  if (k !== 'rsa' && k !== 'ed25519') return { ok: false, reason: 'unknown key type' };
  const s = tags.get('s');
  if (s !== undefined && !colonList(s).some((t) => t === '*' || t.toLowerCase() === 'email'))
    return { ok: false, reason: 'key not for email' };
  const p = tags.get('p');
  if (p === undefined) return { ok: false, reason: 'invalid public key' };
  const der = Buffer.from(base64Value(p), 'base64');
  if (der.length === 0) return { ok: false, reason: 'key revoked' };
  let key: KeyObject;
  try {
    if (k === 'ed25519') {
      if (der.length !== 32) return { ok: false, reason: 'invalid public key' };
      key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, der]), format: 'der', type: 'spki' });
    } else {
      key = rsaKey(der);
      const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
      if (bits < minKeyBits) return { ok: false, reason: `weak key (${bits} bits)` };
    }
  } catch {
    return { ok: false, reason: 'invalid public key' };
  }
  if (key.asymmetricKeyType !== k) return { ok: false, reason: 'invalid public key' };
  const h = tags.get('h');
  const flags = colonList(tags.get('t') ?? '');
  return {
    ok: true,
    type: k,
    key,
    hashes: h === undefined ? undefined : colonList(h).map((x) => x.toLowerCase()),
    testing: flags.includes('y'),
    strict: flags.includes('s'),
  };
}

/** RSA keys are published as SubjectPublicKeyInfo; some publish the bare RSAPublicKey (PKCS#1). */
function rsaKey(der: Buffer): KeyObject {
  try {
    return createPublicKey({ key: der, format: 'der', type: 'spki' });
  } catch {
    return createPublicKey({ key: der, format: 'der', type: 'pkcs1' });
  }
}

/** A DKIM-Signature field parsed (RFC 6376 3.5), or the verdict it already earned. */
interface Signature {
  readonly field: Field;
  /** The field with `b=`'s value deleted (RFC 6376 3.7). */
  readonly unsigned: string;
  readonly verdict: SignatureVerdict;
  readonly keyType: KeyType;
  readonly headerCanon: Canon;
  readonly bodyCanon: Canon;
  readonly h: readonly string[];
  readonly bh: string;
  readonly b: string;
  readonly length: number | undefined;
}

const ALGORITHMS: Readonly<Record<string, KeyType>> = { 'rsa-sha256': 'rsa', 'ed25519-sha256': 'ed25519' };
const DIGITS = /^\d{1,12}$/;
const DOMAIN = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$/;

/** The signature in `field`, or a verdict when it cannot be checked at all. */
function parseSignature(field: Field, opts: VerifyOptions): Signature | SignatureVerdict {
  const raw = field.raw;
  const tags = parseSignatureTags(raw, raw.indexOf(':') + 1);
  if (!tags) return { result: 'permerror', reason: 'malformed signature' };
  const d = tags.d === undefined ? undefined : withoutFinalDot(tags.d.toLowerCase());
  const { s, i } = tags;
  const a = tags.a?.toLowerCase();
  const b = base64Value(tags.b ?? '');
  // Built by assignment, not conditional spreads: this runs for every signature of every message.
  const known: { -readonly [K in keyof SignatureVerdict]: SignatureVerdict[K] } = { result: 'permerror' };
  if (d !== undefined) known.domain = d;
  if (s !== undefined) known.selector = s;
  if (a !== undefined) known.algorithm = a;
  if (d !== undefined) known.identity = i ?? `@${d}`;
  if (b !== '') known.b = b.slice(0, 8);
  const bad = (reason: string): SignatureVerdict => ({ ...known, reason });
  if (tags.v !== '1') return bad('incompatible version');
  const { bh, h } = tags;
  if (
    d === undefined ||
    s === undefined ||
    a === undefined ||
    b === '' ||
    bh === undefined ||
    h === undefined
  )
    return bad('missing required tag');
  if (!DOMAIN.test(d) || !DOMAIN.test(s)) return bad('malformed d= or s=');
  if (a === 'rsa-sha1') return bad('weak algorithm rsa-sha1'); // RFC 8301 3.1
  const keyType = ALGORITHMS[a];
  if (keyType === undefined) return bad(`unknown algorithm ${a}`);
  const canons = canonicalizations(tags.c);
  if (canons === undefined) return bad('unknown canonicalization');
  const signed = headerNames(h);
  if (!signed.includes('from')) return bad('From field not signed');
  if (i !== undefined) {
    const at = i.lastIndexOf('@');
    const idDomain = i.slice(at + 1).toLowerCase();
    if (at < 0 || (idDomain !== d && !idDomain.endsWith(`.${d}`))) return bad('i= not within d=');
  }
  const { q, l, t, x } = tags;
  if (q !== undefined && !colonList(q).some((m) => m.toLowerCase() === 'dns/txt'))
    return bad('unknown query method');
  if ((l !== undefined && !DIGITS.test(l)) || (t !== undefined && !DIGITS.test(t)))
    return bad('malformed l= or t=');
  if (x !== undefined && (!DIGITS.test(x) || (t !== undefined && Number(x) < Number(t))))
    return bad('malformed x=');
  const length = l === undefined ? undefined : Number(l);
  const verdict = known;
  verdict.result = 'pass';
  if (length !== undefined) verdict.bodyLength = length;
  const nowSeconds = Math.floor(opts.now / 1000);
  // RFC 6376 3.5: an expired signature is not valid; one from the future MAY be ignored.
  if (x !== undefined && Number(x) < nowSeconds) return { ...verdict, result: 'neutral', reason: 'expired' };
  if (t !== undefined && Number(t) > nowSeconds + opts.clockSkew)
    return { ...verdict, result: 'neutral', reason: 'signed in the future' };
  // 3.7: the field is hashed with b='s value deleted ("b=" stays).
  const unsigned = raw.slice(0, tags.bEquals + 1) + raw.slice(tags.bEnd);
  return {
    field,
    unsigned,
    verdict,
    keyType,
    headerCanon: canons.header,
    bodyCanon: canons.body,
    h: signed,
    bh: base64Value(bh),
    b,
    length,
  };
}

function withoutFinalDot(domain: string): string {
  return domain.charCodeAt(domain.length - 1) === 46 ? domain.slice(0, -1) : domain;
}

/** `c=` (default simple/simple), or undefined when it names an unknown canonicalization. */
function canonicalizations(
  c: string | undefined,
): { readonly header: Canon; readonly body: Canon } | undefined {
  const parts = (c ?? 'simple/simple').toLowerCase().split('/');
  const header = parts[0];
  const body = parts[1] ?? 'simple';
  if (parts.length > 2 || !isCanon(header) || !isCanon(body)) return undefined;
  return { header, body };
}

/** `h=`'s names, lower case (one split when, as usual, there is no FWS, upper case or non-ASCII octet). */
function headerNames(h: string): string[] {
  return NOT_PLAIN_NAMES.test(h) ? colonList(h).map((n) => n.toLowerCase()) : h.split(':');
}

/** An octet that makes `h=` need more than a split: FWS or another control, upper case, non-ASCII. */
const NOT_PLAIN_NAMES = /[\x00-\x20A-Z\x7f-\uffff]/;

function isCanon(c: string | undefined): c is Canon {
  return c === 'simple' || c === 'relaxed';
}

/** A signature's key, or the verdict its absence or unfitness earned. */
type KeyAnswer =
  | { ok: true; key: Extract<ParsedKey, { ok: true }> }
  | { ok: false; verdict: SignatureVerdict };

/**
 * The key for `sig` (`<s>._domainkey.<d>` TXT, RFC 6376 3.6.2): at once when
 * `cachedLookup` has the record, else a promise of the lookup.
 */
function fetchKey(sig: Signature, opts: VerifyOptions): KeyAnswer | Promise<KeyAnswer> {
  const name = `${sig.verdict.selector}._domainkey.${sig.verdict.domain}`;
  const cached = opts.cachedLookup?.(name);
  if (cached !== undefined) return keyOf(sig, cached, opts);
  return opts.lookup(name).then((answer) => keyOf(sig, answer, opts));
}

/** The key record in `answer`, parsed (`opts.keys`) and checked against `sig`. */
function keyOf(sig: Signature, answer: DnsResult<string>, opts: VerifyOptions): KeyAnswer {
  const { verdict } = sig;
  if (answer.kind === 'error')
    return {
      ok: false,
      verdict: { ...verdict, result: 'temperror', reason: `key lookup: ${answer.reason}` },
    };
  const record = answer.kind === 'answer' ? answer.records[0] : undefined;
  if (record === undefined)
    return { ok: false, verdict: { ...verdict, result: 'permerror', reason: 'no key' } };
  const parsed = opts.keys.get(record, opts.minKeyBits);
  if (!parsed.ok) return { ok: false, verdict: { ...verdict, result: 'permerror', reason: parsed.reason } };
  const fail = (reason: string) => ({
    ok: false as const,
    verdict: { ...verdict, result: 'permerror' as const, reason },
  });
  if (parsed.type !== sig.keyType) return fail('inappropriate key algorithm');
  if (parsed.hashes !== undefined && !parsed.hashes.includes('sha256'))
    return fail('inappropriate hash algorithm');
  if (parsed.strict && verdict.identity !== undefined) {
    const idDomain = verdict.identity.slice(verdict.identity.lastIndexOf('@') + 1).toLowerCase();
    if (idDomain !== verdict.domain) return fail('i= must be d= (key t=s)');
  }
  return { ok: true, key: parsed };
}

function isParsed(message: Readable | Buffer | MessageHeader): message is MessageHeader {
  return 'bodyStart' in message;
}

/**
 * The signatures of a header section (top first, up to `maxSignatures`),
 * each with its key (or the promise of it) and the body hasher it reads
 * (signatures with the same body canonicalisation and `l=` share one).
 */
class Checks {
  readonly signatures: (Signature | SignatureVerdict)[];
  readonly skipped: number;
  /** Per signature: its key or the lookup under way (undefined for a verdict already reached). */
  readonly keys: (KeyAnswer | Promise<KeyAnswer> | undefined)[] = [];
  /** Per signature: its body hasher (undefined for a verdict already reached). */
  readonly hasherOf: (BodyHasher | undefined)[] = [];
  /** The distinct hashers, to feed the body to. */
  readonly hashers: BodyHasher[] = [];
  /** Some key is still being looked up. */
  pending = false;

  readonly fields: readonly Field[];

  constructor(fields: readonly Field[], opts: VerifyOptions) {
    this.fields = fields;
    const found: Field[] = [];
    for (const f of fields) if (f.name === 'dkim-signature') found.push(f);
    this.skipped = Math.max(0, found.length - opts.maxSignatures);
    if (found.length > opts.maxSignatures) found.length = opts.maxSignatures;
    this.signatures = found.map((f) => parseSignature(f, opts));
    const ids: string[] = [];
    for (const sig of this.signatures) {
      if (!('field' in sig)) {
        this.keys.push(undefined);
        this.hasherOf.push(undefined);
        continue;
      }
      const key = fetchKey(sig, opts);
      if (key instanceof Promise) {
        // Awaited after the body; until then a rejection must not go unhandled.
        key.catch(() => {});
        this.pending = true;
      }
      this.keys.push(key);
      const id = hasherId(sig);
      let at = ids.indexOf(id);
      if (at < 0) {
        at = ids.push(id) - 1;
        this.hashers.push(new BodyHasher(sig.bodyCanon, sig.length));
      }
      this.hasherOf.push(this.hashers[at]);
    }
  }

  feed(chunk: Buffer): void {
    for (const hasher of this.hashers) hasher.update(chunk);
  }

  /** The verdicts, once the body has been fed: at once when every key is at hand and checks run here. */
  conclude(opts: VerifyOptions): Verification | Promise<Verification> {
    if (this.pending || opts.threadPool) return this.#concludeLater(opts);
    const out: SignatureVerdict[] = [];
    for (let i = 0; i < this.signatures.length; i++) {
      const sig = this.signatures[i] as Signature | SignatureVerdict;
      if (!('field' in sig)) out.push(sig);
      else out.push(this.#check(sig, this.keys[i] as KeyAnswer, this.hasherOf[i] as BodyHasher, false));
    }
    return { signatures: out, skipped: this.skipped };
  }

  async #concludeLater(opts: VerifyOptions): Promise<Verification> {
    const out: SignatureVerdict[] = [];
    for (let i = 0; i < this.signatures.length; i++) {
      const sig = this.signatures[i] as Signature | SignatureVerdict;
      if (!('field' in sig)) {
        out.push(sig);
        continue;
      }
      const key = await (this.keys[i] as KeyAnswer | Promise<KeyAnswer>);
      const verdict = this.#check(sig, key, this.hasherOf[i] as BodyHasher, opts.threadPool === true);
      out.push(await verdict);
    }
    return { signatures: out, skipped: this.skipped };
  }

  #check(sig: Signature, key: KeyAnswer, hasher: BodyHasher, threadPool: false): SignatureVerdict;
  #check(
    sig: Signature,
    key: KeyAnswer,
    hasher: BodyHasher,
    threadPool: boolean,
  ): SignatureVerdict | Promise<SignatureVerdict>;
  #check(
    sig: Signature,
    key: KeyAnswer,
    hasher: BodyHasher,
    threadPool: boolean,
  ): SignatureVerdict | Promise<SignatureVerdict> {
    if (!key.ok) return key.verdict;
    const verdict = key.key.testing ? { ...sig.verdict, testing: true } : sig.verdict;
    // The digest is made once per hasher, whichever signature asks first.
    const bh = hasher.digest();
    if (sig.length !== undefined && sig.length > hasher.length)
      return { ...verdict, result: 'fail', reason: 'body shorter than l=' };
    if (bh !== sig.bh) return { ...verdict, result: 'fail', reason: 'body hash did not verify' };
    const answer = (ok: boolean): SignatureVerdict =>
      ok ? verdict : { ...verdict, result: 'fail', reason: 'signature did not verify' };
    return threadPool
      ? checkSignature(sig, this.fields, key.key, true).then(answer)
      : answer(checkSignature(sig, this.fields, key.key, false));
  }
}

/**
 * Verify every DKIM signature of a message whose header section a check
 * parsed already (`messageHeader` of `mailframe/policy`): the verdicts at
 * once, without a promise, when every key record is in `cachedLookup`'s
 * cache (and `threadPool` is off), else a promise of them.
 */
export function verifyHeader(
  header: MessageHeader,
  opts: VerifyOptions,
): Verification | Promise<Verification> {
  const checks = new Checks(header.fields, opts);
  if (checks.hashers.length > 0) checks.feed(header.buffer.subarray(header.bodyStart));
  return checks.conclude(opts);
}

/**
 * Verify every DKIM signature of `message` (CRLF line endings, as spooled):
 * a stream, a small message already in memory as one buffer, or one whose
 * header section a check parsed already (`messageHeader` of `mailframe/policy`).
 */
export async function verifyMessage(
  message: Readable | Buffer | MessageHeader,
  opts: VerifyOptions,
): Promise<Verification> {
  if (isParsed(message)) return verifyHeader(message, opts);
  const head: Buffer[] = [];
  let headSize = 0;
  let checks: Checks | undefined;

  /** Take the next chunk; false once nothing more is needed. */
  const feed = (chunk: Buffer): boolean => {
    if (checks !== undefined) {
      checks.feed(chunk);
      return true;
    }
    const from = Math.max(0, headSize - 3);
    head.push(chunk);
    headSize += chunk.length;
    const all = head.length === 1 ? chunk : Buffer.concat(head, headSize);
    head.length = 0;
    head.push(all);
    // A message without header fields starts with the empty line.
    const end = all[0] === 13 && all[1] === 10 ? -2 : all.indexOf('\r\n\r\n', from);
    if (end === -1) return true;
    checks = new Checks(parseFields(all.toString('latin1', 0, end + 2)), opts);
    if (checks.hashers.length === 0) return false; // nothing to hash: no need to read the body
    checks.feed(all.subarray(end + 4));
    return true;
  };

  if (Buffer.isBuffer(message)) feed(message);
  else {
    try {
      for await (const c of message) if (!feed(c as Buffer)) break;
    } finally {
      message.destroy();
    }
  }
  // A message that is all header section (no empty line): its body is empty.
  checks ??= new Checks(parseFields(Buffer.concat(head, headSize).toString('latin1')), opts);
  return checks.conclude(opts);
}

function hasherId(sig: Signature): string {
  return `${sig.bodyCanon} ${sig.length ?? ''}`;
}

/**
 * The header hash check (RFC 6376 3.7): the signed fields, then this field
 * with an empty `b=`. With `threadPool`, the public-key operation runs on
 * libuv's thread pool and the answer comes as a promise.
 */
function checkSignature(
  sig: Signature,
  fields: readonly Field[],
  key: Extract<ParsedKey, { ok: true }>,
  threadPool: false,
): boolean;
function checkSignature(
  sig: Signature,
  fields: readonly Field[],
  key: Extract<ParsedKey, { ok: true }>,
  threadPool: true,
): Promise<boolean>;
function checkSignature(
  sig: Signature,
  fields: readonly Field[],
  key: Extract<ParsedKey, { ok: true }>,
  threadPool: boolean,
): boolean | Promise<boolean> {
  let data = signedHeaderData(fields, sig.h, sig.headerCanon);
  data += canonField(sig.unsigned, sig.headerCanon);
  const signature = Buffer.from(sig.b, 'base64');
  const octets = Buffer.from(data, 'latin1');
  // Ed25519 signs the SHA-256 of the data (RFC 8463 3), RSA the data with SHA-256.
  const algorithm = key.type === 'ed25519' ? null : 'sha256';
  const signed = key.type === 'ed25519' ? hash('sha256', octets, 'buffer') : octets;
  if (!threadPool) {
    try {
      return verify(algorithm, signed, key.key, signature);
    } catch {
      return false;
    }
  }
  return new Promise((resolve) => {
    try {
      verify(algorithm, signed, key.key, signature, (err, ok) => resolve(err === null && ok));
    } catch {
      resolve(false);
    }
  });
}
