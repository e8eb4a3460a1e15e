/**
 * Bearer tokens for the admin API. Tokens are 32 random octets (base64url,
 * prefixed `mft_`), so a fast hash is enough: nobody can search a 256-bit
 * space, which is what a slow hash (scrypt) protects short passwords against.
 * The tokens file keeps only their SHA-256, one per line with a name:
 *
 *   # name   hash
 *   alice    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
 *
 * A presented token is hashed and compared with every stored hash in
 * constant time (`timingSafeEqual`), so the time taken tells nothing of which
 * hash, or how much of it, matched.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { open } from 'node:fs/promises';

export const TOKEN_PREFIX = 'mft_';
const HASH_RE = /^sha256:([0-9a-f]{64})$/;
const NAME_RE = /^[A-Za-z0-9._@-]{1,64}$/;

export interface TokenEntry {
  readonly name: string;
  readonly hash: Buffer;
}

/** A new token and the tokens-file line that admits it. */
export function newToken(name: string): { token: string; line: string } {
  if (!NAME_RE.test(name)) throw new Error(`token name "${name}" must be 1-64 of A-Z a-z 0-9 . _ @ -`);
  const token = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { token, line: `${name} sha256:${hashToken(token).toString('hex')}` };
}

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** Parse a tokens file; throws naming the line of the first bad entry (never its content). */
export function parseTokens(text: string, path: string): TokenEntry[] {
  const out: TokenEntry[] = [];
  const names = new Set<string>();
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [name, hash, ...rest] = line.split(/\s+/);
    const m = HASH_RE.exec(hash ?? '');
    if (name === undefined || !NAME_RE.test(name) || !m?.[1] || rest.length > 0)
      throw new Error(
        `${path}:${i + 1}: expected "NAME sha256:HEX" (make one with \`mailframe admin-token\`)`,
      );
    if (names.has(name)) throw new Error(`${path}:${i + 1}: token name "${name}" appears twice`);
    names.add(name);
    out.push({ name, hash: Buffer.from(m[1], 'hex') });
  }
  return out;
}

/**
 * Read and parse the tokens file. One that every user may write is refused:
 * its hashes are harmless to read, but whoever can add a line admits a token
 * of their own.
 */
export async function readTokens(path: string): Promise<TokenEntry[]> {
  const file = await open(path, 'r');
  try {
    if (((await file.stat()).mode & 0o002) !== 0)
      throw new Error(`${path} is writable by every user: anyone could add a token (chmod o-w ${path})`);
    return parseTokens(await file.readFile('utf8'), path);
  } finally {
    await file.close();
  }
}

/** The name of the entry `token` matches, or undefined. Every entry is compared, in constant time each. */
export function matchToken(entries: readonly TokenEntry[], token: string): string | undefined {
  const presented = hashToken(token);
  let found: string | undefined;
  for (const e of entries) {
    if (timingSafeEqual(e.hash, presented) && found === undefined) found = e.name;
  }
  return found;
}

/** The token of an `Authorization: Bearer ...` header (RFC 6750 2.1), or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  return m?.[1];
}
