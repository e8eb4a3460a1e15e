/**
 * Properties of the DATA decoder (RFC 5321 4.5.2) and the dot-stuffer that is
 * its inverse: round trip through any chunking, the end only on an exact
 * CRLF.CRLF, never a bare line ending in the decoded message, never a throw.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DataDecoder } from '../../core/codec/data-decoder.ts';
import { DotStuffer } from '../../core/codec/dot-stuff.ts';
import { chunkedBytes, chunks, RUNS, smtpBytes } from './arbitraries.ts';

interface Decoded {
  readonly data: Buffer;
  /** Offset in the whole input just after the terminator, or -1. */
  readonly end: number;
  readonly size: number;
  readonly overflow: boolean;
  readonly bare: boolean;
}

function decode(pieces: readonly Buffer[], maxSize = Number.POSITIVE_INFINITY): Decoded {
  const out: Buffer[] = [];
  const decoder = new DataDecoder({ onData: (b) => out.push(b), maxSize });
  let offset = 0;
  let end = -1;
  for (const piece of pieces) {
    const r = decoder.write(piece);
    if (end === -1 && r !== -1) end = offset + r;
    offset += piece.length;
  }
  expect(decoder.done).toBe(end !== -1);
  return {
    data: Buffer.concat(out),
    end,
    size: decoder.size,
    overflow: decoder.overflow,
    bare: decoder.bareLineEndings,
  };
}

function stuff(body: readonly Buffer[]): Buffer {
  const s = new DotStuffer();
  const out: Buffer[] = [];
  for (const piece of body) out.push(...s.write(piece));
  out.push(s.end());
  return Buffer.concat(out);
}

/** What a message is expected to look like after stuffing and decoding: CR LF line endings, last line ended. */
function normalised(body: Buffer): Buffer {
  const text = body.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
  const ended = text.length === 0 || text.endsWith('\r\n') ? text : `${text}\r\n`;
  return Buffer.from(ended, 'latin1');
}

/** The model of where DATA ends: `.CRLF` at the very start, else the first `CRLF.CRLF`. */
function modelEnd(input: Buffer): number {
  if (input.subarray(0, 3).equals(Buffer.from('.\r\n'))) return 3;
  const at = input.indexOf('\r\n.\r\n');
  return at === -1 ? -1 : at + 5;
}

describe('DATA decoder properties', () => {
  it('decodes any dot-stuffed body, split anywhere, back to the body; the rest is left for the next command', () => {
    fc.assert(
      fc.property(
        smtpBytes(300)
          .chain((body) =>
            fc.record({ body: fc.constant(body), bodyPieces: chunks(body), trailing: smtpBytes(20) }),
          )
          .chain(({ body, bodyPieces, trailing }) => {
            const wire = stuff(bodyPieces);
            const input = Buffer.concat([wire, trailing]);
            return chunks(input).map((pieces) => ({ body, wire, pieces }));
          }),
        ({ body, wire, pieces }) => {
          const r = decode(pieces);
          expect(r.end).toBe(wire.length);
          expect(r.data.toString('latin1')).toBe(normalised(body).toString('latin1'));
          expect(r.size).toBe(r.data.length);
          expect(r.bare).toBe(false);
        },
      ),
      RUNS,
    );
  });

  it('ends exactly at the first CRLF.CRLF (or a leading .CRLF), and nowhere else', () => {
    fc.assert(
      fc.property(chunkedBytes(300), ({ bytes, pieces }) => {
        expect(decode(pieces).end).toBe(modelEnd(bytes));
      }),
      RUNS,
    );
  });

  it('gives the same result however the input is split', () => {
    fc.assert(
      fc.property(chunkedBytes(300), ({ bytes, pieces }) => {
        expect(decode(pieces)).toEqual(decode([bytes]));
      }),
      RUNS,
    );
  });

  it('never emits a bare CR or LF, and flags one in the input', () => {
    fc.assert(
      fc.property(chunkedBytes(300), ({ bytes, pieces }) => {
        const r = decode(pieces);
        const text = r.data.toString('latin1');
        expect(/\r(?!\n)|(?<!\r)\n/.test(text)).toBe(false);
        const consumed = bytes.subarray(0, r.end === -1 ? bytes.length : r.end).toString('latin1');
        // A lone CR at the very end may still be followed by LF: only a decided one counts.
        const decided = r.end === -1 ? consumed.replace(/\r$/, '') : consumed;
        expect(r.bare).toBe(/\r(?!\n)|(?<!\r)\n/.test(decided));
      }),
      RUNS,
    );
  });

  it('with a size limit, emits a prefix of the unlimited output and keeps counting', () => {
    fc.assert(
      fc.property(chunkedBytes(300), fc.integer({ min: 0, max: 320 }), ({ pieces }, maxSize) => {
        const free = decode(pieces);
        const capped = decode(pieces, maxSize);
        expect(capped.end).toBe(free.end);
        expect(capped.size).toBe(free.size);
        expect(capped.overflow).toBe(free.size > maxSize);
        expect(capped.data.equals(free.data.subarray(0, Math.min(maxSize, free.size)))).toBe(true);
      }),
      RUNS,
    );
  });

  it('never throws on arbitrary bytes, and answers 0 once done', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (arrays) => {
        const decoder = new DataDecoder({ onData: () => {}, maxSize: 50 });
        for (const a of arrays) {
          const wasDone = decoder.done;
          const r = decoder.write(Buffer.from(a));
          if (wasDone) expect(r).toBe(0);
        }
      }),
      RUNS,
    );
  });
});
