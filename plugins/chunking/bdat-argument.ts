/**
 * The BDAT argument (RFC 3030 section 2): `chunk-size [SP end-marker]`, where
 * chunk-size is 1*DIGIT and end-marker is `LAST`.
 */

export type BdatArgument =
  /** Well formed. */
  | { readonly kind: 'ok'; readonly size: number; readonly last: boolean }
  /** The size is readable but the rest is not: the chunk can still be skipped. */
  | { readonly kind: 'bad-marker'; readonly size: number }
  /** No usable size: where the chunk ends cannot be known. */
  | { readonly kind: 'no-size' };

/** Sizes are bounded so they stay exact as JavaScript numbers. */
export const MAX_CHUNK_SIZE = Number.MAX_SAFE_INTEGER;

const DIGITS = /^[0-9]{1,16}$/;

export function parseBdatArgument(argument: string): BdatArgument {
  const parts = argument.trim().split(/ +/);
  const digits = parts[0] ?? '';
  if (!DIGITS.test(digits)) return { kind: 'no-size' };
  const size = Number(digits);
  if (size > MAX_CHUNK_SIZE) return { kind: 'no-size' };
  if (parts.length === 1) return { kind: 'ok', size, last: false };
  if (parts.length === 2 && parts[1]?.toUpperCase() === 'LAST') return { kind: 'ok', size, last: true };
  return { kind: 'bad-marker', size };
}
