/**
 * Properties of the command-mode line reader: however the input is split
 * across pushes, it yields the lines (and `too-long` events) a simple model
 * gives for the whole input, and `take` hands back exactly the unread bytes.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type LineEvent, LineReader } from '../../core/codec/line-reader.ts';
import { chunkedBytes, RUNS } from './arbitraries.ts';

/** Every LF-terminated line of `input`: too long when its octets with the LF exceed `max`, else its text without CR LF. */
function model(input: Buffer, max: number): LineEvent[] {
  const events: LineEvent[] = [];
  let start = 0;
  for (let lf = input.indexOf(0x0a); lf !== -1; lf = input.indexOf(0x0a, start)) {
    if (lf + 1 - start > max) events.push({ kind: 'too-long' });
    else {
      const end = lf > start && input[lf - 1] === 0x0d ? lf - 1 : lf;
      events.push({ kind: 'line', line: input.toString('utf8', start, end) });
    }
    start = lf + 1;
  }
  return events;
}

function drain(reader: LineReader, into: LineEvent[]): void {
  for (let e = reader.next(); e !== undefined; e = reader.next()) into.push(e);
}

describe('line reader properties', () => {
  it('yields the same lines and too-long events however the input is split', () => {
    fc.assert(
      fc.property(chunkedBytes(300), fc.integer({ min: 2, max: 40 }), ({ bytes, pieces }, max) => {
        const reader = new LineReader(max);
        const events: LineEvent[] = [];
        for (const piece of pieces) {
          reader.push(piece);
          drain(reader, events);
          // The memory bound: once read, an unfinished line keeps less than the limit buffered.
          expect(reader.buffered).toBeLessThan(max);
        }
        expect(events).toEqual(model(bytes, max));
      }),
      RUNS,
    );
  });

  it('gives the same events when several pushes happen before reading', () => {
    fc.assert(
      fc.property(chunkedBytes(300), fc.integer({ min: 2, max: 400 }), ({ bytes, pieces }, max) => {
        // With every line short enough, reading late changes nothing.
        fc.pre(model(bytes, max).every((e) => e.kind === 'line'));
        const reader = new LineReader(max);
        for (const piece of pieces) reader.push(piece);
        const events: LineEvent[] = [];
        drain(reader, events);
        expect(events).toEqual(model(bytes, max));
      }),
      RUNS,
    );
  });

  it('take() after some lines returns exactly the bytes not yet read', () => {
    fc.assert(
      fc.property(chunkedBytes(300), fc.nat({ max: 20 }), ({ bytes, pieces }, wanted) => {
        const reader = new LineReader(1000);
        for (const piece of pieces) reader.push(piece);
        let consumed = 0;
        for (let k = 0; k < wanted && reader.hasLine; k++) {
          reader.next();
          consumed = bytes.indexOf(0x0a, consumed) + 1;
        }
        expect(reader.take().equals(bytes.subarray(consumed))).toBe(true);
        expect(reader.buffered).toBe(0);
        expect(reader.next()).toBeUndefined();
      }),
      RUNS,
    );
  });
});
