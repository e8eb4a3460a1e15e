/**
 * The DKIM body hash (RFC 6376 3.4.3, 3.4.4, 3.5 `l=`) of `plugins/dkim`
 * against mailauth's, an independent implementation: any body made of the
 * octets canonicalisation cares about (SP, HTAB, CR, LF, text), cut into any
 * chunks, in simple and relaxed canonicalisation, whole or limited by `l=`.
 */
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BodyHasher, type Canon } from '../../plugins/dkim/canon.ts';
import { chunks, RUNS } from './arbitraries.ts';

/** mailauth's body hashers (untyped module). */
const { dkimBody } = createRequire(import.meta.url)('mailauth/lib/dkim/body/index.js') as {
  dkimBody: (
    canon: string,
    algorithm: string,
    limit: number | undefined,
  ) => { update(data: Buffer): void; digest(encoding: 'base64'): string };
};

/** Bodies as the spool holds them: CRLF line endings, runs of white space, empty lines, maybe no final CRLF. */
const body = fc
  .array(fc.constantFrom('a', 'Bc', ' ', '  ', '\t', ' \t ', '\r\n', '\r\n\r\n'), { maxLength: 40 })
  .map((parts) => Buffer.from(parts.join(''), 'latin1'));

/** Bodies past the hasher's 4,000-octet staging block: long runs of clean lines hashed as ranges. */
const longBody = fc
  .array(fc.constantFrom('x'.repeat(76), 'a b', ' ', '\t', '\r\n', '\r\n\r\n'), {
    minLength: 50,
    maxLength: 400,
  })
  .map((parts) => Buffer.from(parts.join(''), 'latin1'));

function theirs(canon: Canon, data: Buffer, limit: number | undefined): string {
  const hasher = dkimBody(canon, 'sha256', limit);
  hasher.update(data);
  return hasher.digest('base64');
}

function ours(canon: Canon, pieces: readonly Buffer[], limit: number | undefined): string {
  const hasher = new BodyHasher(canon, limit);
  for (const p of pieces) hasher.update(p);
  return hasher.digest();
}

describe('DKIM body hash', () => {
  for (const canon of ['simple', 'relaxed'] as const) {
    it(`${canon}: the same bh= as mailauth for any body and chunking`, () => {
      fc.assert(
        fc.property(
          body.chain((b) => fc.tuple(fc.constant(b), chunks(b))),
          ([b, pieces]) => {
            expect(ours(canon, pieces, undefined)).toBe(theirs(canon, b, undefined));
          },
        ),
        RUNS,
      );
    });

    it(`${canon}: the same bh= as mailauth for long bodies, whole or with l=`, () => {
      fc.assert(
        fc.property(
          longBody.chain((b) =>
            fc.tuple(fc.constant(b), chunks(b), fc.option(fc.integer({ min: 0, max: b.length + 4 }))),
          ),
          ([b, pieces, limit]) => {
            expect(ours(canon, pieces, limit ?? undefined)).toBe(theirs(canon, b, limit ?? undefined));
          },
        ),
        RUNS,
      );
    });

    it(`${canon}: the same bh= as mailauth with an l= limit`, () => {
      fc.assert(
        fc.property(
          body.chain((b) => fc.tuple(fc.constant(b), chunks(b), fc.integer({ min: 0, max: b.length + 4 }))),
          ([b, pieces, limit]) => {
            expect(ours(canon, pieces, limit)).toBe(theirs(canon, b, limit));
          },
        ),
        RUNS,
      );
    });
  }
});
