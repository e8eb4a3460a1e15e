import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DataDecoder } from '../../core/codec/data-decoder.ts';
import { DotStuffer, dotStuff } from '../../core/codec/dot-stuff.ts';

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

function stuff(input: Buffer, splits: readonly number[] = []): string {
  const s = new DotStuffer();
  const out: Buffer[] = [];
  let from = 0;
  for (const to of [...splits, input.length]) {
    out.push(...s.write(input.subarray(from, to)));
    from = to;
  }
  out.push(s.end());
  return Buffer.concat(out).toString('latin1');
}

function decode(wire: string): { output: string; end: number } {
  const pieces: Buffer[] = [];
  const d = new DataDecoder({ onData: (c) => pieces.push(c), maxSize: Number.POSITIVE_INFINITY });
  const end = d.write(bytes(wire));
  return { output: Buffer.concat(pieces).toString('latin1'), end };
}

const cases: ReadonlyArray<readonly [string, string]> = [
  ['', '.\r\n'],
  ['a\r\n', 'a\r\n.\r\n'],
  ['a', 'a\r\n.\r\n'],
  ['.\r\n', '..\r\n.\r\n'],
  ['.', '..\r\n.\r\n'],
  ['..x\r\n', '...x\r\n.\r\n'],
  ['a\r\n.\r\nb\r\n', 'a\r\n..\r\nb\r\n.\r\n'],
  ['a\r\n.b\r\n..c\r\nd.e\r\n', 'a\r\n..b\r\n...c\r\nd.e\r\n.\r\n'],
  ['x\r\n\r\n.', 'x\r\n\r\n..\r\n.\r\n'],
  // Bare line endings are normalised, so the receiver's lines are the ones stuffed.
  ['a\n.\nb', 'a\r\n..\r\nb\r\n.\r\n'],
  ['a\r.\rb\r', 'a\r\n..\r\nb\r\n.\r\n'],
  ['\n.', '\r\n..\r\n.\r\n'],
];

describe('DotStuffer', () => {
  for (const [input, wire] of cases) {
    it(`stuffs ${JSON.stringify(input)}`, () => {
      const data = bytes(input);
      expect(stuff(data)).toBe(wire);
      for (let k = 0; k <= data.length; k++) expect(stuff(data, [k])).toBe(wire);
      expect(
        stuff(
          data,
          Array.from({ length: Math.max(0, data.length - 1) }, (_, k) => k + 1),
        ),
      ).toBe(wire);
    });
  }

  it('emits slices of the input', () => {
    // Not from the shared pool, so only slices of it share its ArrayBuffer.
    const data = Buffer.alloc(18);
    data.write('line\r\n.dot\r\nmore\r\n', 'latin1');
    const pieces = new DotStuffer().write(data);
    const own = pieces.filter((p) => p.buffer === data.buffer);
    expect(Buffer.concat(own).toString()).toBe(data.toString());
  });

  it('is reusable after end()', () => {
    const s = new DotStuffer();
    s.write(bytes('abc'));
    expect(s.end().toString()).toBe('\r\n.\r\n');
    expect(s.write(bytes('.x\r\n')).map(String).join('')).toBe('..x\r\n');
    expect(s.end().toString()).toBe('.\r\n');
  });

  it('round-trips through the DataDecoder for CRLF-only input', () => {
    const random = prng(7);
    const alphabet = ['\r\n', '.', 'a', '..', ' '];
    for (let round = 0; round < 300; round++) {
      let text = '';
      const length = Math.floor(random() * 30);
      for (let k = 0; k < length; k++) text += alphabet[Math.floor(random() * alphabet.length)];
      const data = bytes(text);
      const splits: number[] = [];
      for (let k = 1; k < data.length; k++) if (random() < 0.3) splits.push(k);
      const wire = stuff(data, splits);
      const decoded = decode(wire + 'NEXT');
      const expected = text === '' || text.endsWith('\r\n') ? text : text + '\r\n';
      expect(decoded.output, JSON.stringify(text)).toBe(expected);
      expect(decoded.end).toBe(wire.length);
    }
  });

  it('round-trips long lines', () => {
    const random = prng(11);
    for (let round = 0; round < 100; round++) {
      let text = '';
      const segments = Math.floor(random() * 10);
      for (let k = 0; k < segments; k++) {
        text += (random() < 0.3 ? '.' : '') + 'b'.repeat(Math.floor(random() * 400)) + '\r\n';
      }
      const data = bytes(text);
      const splits: number[] = [];
      for (let k = 1; k < data.length; k++) if (random() < 0.01) splits.push(k);
      const wire = stuff(data, splits);
      expect(wire).toBe(stuff(data));
      expect(decode(wire).output).toBe(text);
    }
  });

  it('round-trips bare line endings as their normalised form', () => {
    const text = 'a\nb\rc\r\r\n.\n..\r';
    const decoded = decode(stuff(bytes(text)));
    expect(decoded.output).toBe('a\r\nb\r\nc\r\n\r\n.\r\n..\r\n');
  });
});

describe('dotStuff stream', () => {
  it('stuffs a stream and appends the terminator', async () => {
    const out: Buffer[] = [];
    for await (const chunk of Readable.from([bytes('a\r'), bytes('\n.'), bytes('b')]).pipe(dotStuff())) {
      out.push(chunk as Buffer);
    }
    expect(Buffer.concat(out).toString()).toBe('a\r\n..b\r\n.\r\n');
  });
});

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
