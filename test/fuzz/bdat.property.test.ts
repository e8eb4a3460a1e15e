/**
 * Properties of BDAT framing (RFC 3030): the argument parser round-trips every
 * size and marker it can be given, never throws, and a message cut into BDAT
 * chunks of any sizes is framed back into the same message by the line reader
 * (for the command) and `take` (for the octets that follow it).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LineReader } from '../../core/codec/line-reader.ts';
import { MAX_CHUNK_SIZE, parseBdatArgument } from '../../plugins/chunking/bdat-argument.ts';
import { chunks, RUNS, smtpBytes } from './arbitraries.ts';

const spaces = fc.stringMatching(/^ {0,3}$/);
const someSpaces = fc.stringMatching(/^ {1,3}$/);

describe('BDAT framing properties', () => {
  it('reads back any size, with or without LAST in any case, with leading zeros and extra spaces', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MAX_CHUNK_SIZE }),
        fc.nat({ max: 3 }),
        fc.option(fc.mixedCase(fc.constant('last')), { nil: undefined }),
        spaces,
        someSpaces,
        spaces,
        (size, zeros, last, before, between, after) => {
          const digits = '0'.repeat(zeros) + String(size);
          fc.pre(digits.length <= 16);
          const arg = before + digits + (last === undefined ? '' : between + last) + after;
          expect(parseBdatArgument(arg)).toEqual({ kind: 'ok', size, last: last !== undefined });
        },
      ),
      RUNS,
    );
  });

  it('never throws; a size it reports is a safe integer written at the start', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: 'binary', maxLength: 40 }),
          fc.stringMatching(/^ ?[0-9]{0,20}( +[A-Za-z0-9]{0,6}){0,3} ?$/),
        ),
        (arg) => {
          const r = parseBdatArgument(arg);
          if (r.kind !== 'no-size') {
            expect(Number.isSafeInteger(r.size) && r.size >= 0).toBe(true);
            expect(Number(arg.trim().split(' ')[0])).toBe(r.size);
          }
        },
      ),
      RUNS,
    );
  });

  it('a message sent as BDAT chunks of any sizes, split anywhere on the wire, is framed back intact', () => {
    fc.assert(
      fc.property(
        smtpBytes(300).chain((message) =>
          fc.array(fc.integer({ min: 0, max: message.length }), { maxLength: 5 }).chain((cuts) => {
            const points = [0, ...cuts.sort((a, b) => a - b), message.length];
            const wire = Buffer.concat(
              points.slice(1).flatMap((end, i) => {
                const body = message.subarray(points[i], end);
                const last = i === points.length - 2 ? ' LAST' : '';
                return [Buffer.from(`BDAT ${body.length}${last}\r\n`), body];
              }),
            );
            return chunks(wire).map((pieces) => ({ message, pieces }));
          }),
        ),
        ({ message, pieces }) => {
          const reader = new LineReader(512);
          const received: Buffer[] = [];
          let want = -1;
          let last = false;
          let done = false;
          let raw: Buffer = Buffer.alloc(0);
          const step = (): boolean => {
            if (want === -1) {
              const e = reader.next();
              if (e === undefined) return false;
              expect(e.kind).toBe('line');
              const arg = parseBdatArgument(e.kind === 'line' ? e.line.slice(5) : '');
              if (arg.kind !== 'ok') throw new Error(`bad BDAT argument: ${JSON.stringify(e)}`);
              want = arg.size;
              last = arg.last;
              raw = reader.take();
            }
            const n = Math.min(want, raw.length);
            received.push(raw.subarray(0, n));
            raw = raw.subarray(n);
            want -= n;
            if (want > 0) return false;
            want = -1;
            done = last;
            if (raw.length > 0) reader.push(raw);
            raw = Buffer.alloc(0);
            return !done;
          };
          for (const piece of pieces) {
            if (want === -1) reader.push(piece);
            else raw = Buffer.concat([raw, piece]);
            while (step());
          }
          expect(done).toBe(true);
          expect(Buffer.concat(received).equals(message)).toBe(true);
        },
      ),
      RUNS,
    );
  });
});
