/**
 * Password hashes for the users file: `scrypt$N$r$p$SALT$HASH` with SALT and
 * HASH in base64. What is hashed is the password as SASLprep (RFC 4013)
 * prepares it, as RFC 4616 section 2 asks of a stored hash, so the same
 * password typed on different systems (composed or not, with a no-break space
 * or a soft hyphen) matches what the auth plugin prepares from the client.
 */
import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';
import { prepare } from '../auth/saslprep.ts';

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  readonly N: number;
  /** Block size. */
  readonly r: number;
  /** Parallelisation. */
  readonly p: number;
}

export interface PasswordHash {
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

/** About 16 MiB and some tens of milliseconds per check. */
export const DEFAULT_PARAMS: ScryptParams = Object.freeze({ N: 16384, r: 8, p: 1 });
const SALT_BYTES = 16;
const HASH_BYTES = 32;

const FORMAT = /^scrypt\$(\d{1,8})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

/** Bounds that keep a hostile or mistyped file from costing unbounded memory or time. */
function validParams({ N, r, p }: ScryptParams): boolean {
  return N >= 2 && N <= 2 ** 20 && (N & (N - 1)) === 0 && r >= 1 && r <= 32 && p >= 1 && p <= 16;
}

/** Parse a stored hash; undefined when it is not one (e.g. a plaintext password). */
export function parseHash(text: string): PasswordHash | undefined {
  const m = FORMAT.exec(text);
  if (!m) return undefined;
  const params = { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
  if (!validParams(params)) return undefined;
  const salt = Buffer.from(m[4] as string, 'base64');
  const hash = Buffer.from(m[5] as string, 'base64');
  if (salt.length < 8 || hash.length < 16 || hash.length > 64) return undefined;
  return { params, salt, hash };
}

export function formatHash({ params, salt, hash }: PasswordHash): string {
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

function derive(password: string, salt: Buffer, params: ScryptParams, length: number): Promise<Buffer> {
  const options: ScryptOptions = {
    N: params.N,
    r: params.r,
    p: params.p,
    maxmem: 256 * params.N * params.r + 1024 * 1024,
  };
  return new Promise((resolve, reject) => {
    scrypt(password, salt, length, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/**
 * Hash a password for the users file, SASLprep'd as a stored string first.
 * Throws when SASLprep refuses it (a control, private-use or unassigned
 * character, or nothing left after mapping): no client could present it.
 */
export async function hashPassword(password: string, params: ScryptParams = DEFAULT_PARAMS): Promise<string> {
  if (!validParams(params)) throw new Error('scrypt parameters out of range');
  const prepared = prepare(password, 'stored');
  if (prepared === undefined) {
    throw new Error(
      'SASLprep (RFC 4013) refuses this password: it has a control, private-use or unassigned character, or nothing is left after mapping',
    );
  }
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(prepared, salt, params, HASH_BYTES);
  return formatHash({ params, salt, hash });
}

/**
 * Check a password against a stored hash in constant time. The password is
 * compared as given: the auth plugin hands over the SASLprep'd form.
 */
export async function verifyPassword(password: string, stored: PasswordHash): Promise<boolean> {
  const derived = await derive(password, stored.salt, stored.params, stored.hash.length);
  return timingSafeEqual(derived, stored.hash);
}

/** A hash no password matches, with the given cost: unknown users take as long as wrong passwords. */
export function dummyHash(params: ScryptParams = DEFAULT_PARAMS, length = HASH_BYTES): PasswordHash {
  return { params, salt: randomBytes(SALT_BYTES), hash: randomBytes(length) };
}
