import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DataDecoder, DataDecoderStream } from '../../core/codec/data-decoder.ts';

interface Result {
  readonly output: string;
  readonly size: number;
  readonly overflow: boolean;
  readonly bare: boolean;
  /** Offset in the whole input just after the terminator, or -1. */
  readonly end: number;
  readonly calls: number;
}

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Decode `input` cut at the given split points. */
function decode(input: Buffer, splits: readonly number[], maxSize = Number.POSITIVE_INFINITY): Result {
  const pieces: Buffer[] = [];
  const decoder = new DataDecoder({ onData: (chunk) => pieces.push(chunk), maxSize });
  let end = -1;
  let from = 0;
  for (const to of [...splits, input.length]) {
    const at = decoder.write(input.subarray(from, to));
    if (at !== -1) {
      expect(decoder.done).toBe(true);
      end = from + at;
      break;
    }
    expect(decoder.done).toBe(false);
    from = to;
  }
  return {
    output: Buffer.concat(pieces).toString('latin1'),
    size: decoder.size,
    overflow: decoder.overflow,
    bare: decoder.bareLineEndings,
    end,
    calls: pieces.length,
  };
}

const whole = (input: Buffer, maxSize?: number): Result => decode(input, [], maxSize);
const bytewise = (input: Buffer, maxSize?: number): Result =>
  decode(
    input,
    Array.from({ length: Math.max(0, input.length - 1) }, (_, k) => k + 1),
    maxSize,
  );

function withoutCalls(r: Result): Omit<Result, 'calls'> {
  const { calls: _calls, ...rest } = r;
  return rest;
}

/**
 * Reference decoder: split the input into lines by their endings (CR LF, bare
 * LF, bare CR), then apply the rules line by line on strings.
 */
function reference(text: string, maxSize = Number.POSITIVE_INFINITY): Omit<Result, 'calls'> {
  let out = '';
  let bare = false;
  let atLineStart = true;
  let pos = 0;
  let end = -1;
  while (pos < text.length) {
    let j = pos;
    while (j < text.length && text[j] !== '\r' && text[j] !== '\n') j++;
    let content = text.slice(pos, j);
    let ending: 'crlf' | 'bare' | 'none' | 'pending-cr';
    let next: number;
    if (j === text.length) {
      ending = 'none';
      next = j;
    } else if (text[j] === '\n') {
      ending = 'bare';
      next = j + 1;
    } else if (j + 1 === text.length) {
      ending = 'pending-cr';
      next = j + 1;
    } else if (text[j + 1] === '\n') {
      ending = 'crlf';
      next = j + 2;
    } else {
      ending = 'bare';
      next = j + 1;
    }
    if (atLineStart && content === '.' && ending === 'crlf') {
      end = next;
      break;
    }
    if (atLineStart && content.startsWith('.')) content = content.slice(1);
    out += content;
    if (ending === 'crlf' || ending === 'bare') out += '\r\n';
    if (ending === 'bare') bare = true;
    atLineStart = ending === 'crlf';
    pos = next;
  }
  const size = out.length;
  return { output: out.slice(0, Math.min(size, maxSize)), size, overflow: size > maxSize, bare, end };
}

interface Vector {
  readonly name: string;
  readonly input: string;
  readonly output: string;
  /** What follows the terminator; `undefined` when the input holds no terminator. */
  readonly rest: string | undefined;
  readonly bare?: boolean;
}

const SMUGGLED = 'MAIL FROM:<x@y>\r\n';
const REAL_END = '\r\n.\r\n';
const AFTER = 'QUIT\r\n';

function smuggle(name: string, variant: string, decodedVariant: string, bare = true): Vector {
  return {
    name: `smuggling ${name}`,
    input: 'Subject: s\r\n\r\nbody' + variant + SMUGGLED + REAL_END + AFTER,
    output: 'Subject: s\r\n\r\nbody' + decodedVariant + SMUGGLED + '\r\n',
    rest: AFTER,
    bare,
  };
}

const vectors: readonly Vector[] = [
  { name: 'empty message', input: '.\r\n', output: '', rest: '' },
  { name: 'empty message, bytes after', input: '.\r\nQUIT\r\n', output: '', rest: 'QUIT\r\n' },
  { name: 'single line', input: 'Hello\r\n.\r\n', output: 'Hello\r\n', rest: '' },
  { name: 'blank line only', input: '\r\n.\r\n', output: '\r\n', rest: '' },
  {
    name: 'several lines',
    input: 'Subject: x\r\n\r\nline 1\r\nline 2\r\n.\r\n',
    output: 'Subject: x\r\n\r\nline 1\r\nline 2\r\n',
    rest: '',
  },
  {
    name: 'dot-stuffed lines',
    input: 'a\r\n..b\r\n.c\r\n...\r\n.\r\n',
    output: 'a\r\n.b\r\nc\r\n..\r\n',
    rest: '',
  },
  { name: '.. at start', input: '..\r\n.\r\n', output: '.\r\n', rest: '' },
  { name: '..x at start', input: '..x\r\n.\r\n', output: '.x\r\n', rest: '' },
  { name: '.x at start', input: '.x\r\n.\r\n', output: 'x\r\n', rest: '' },
  { name: 'dot not at line start', input: 'a.b.\r\n a .\r\n.\r\n', output: 'a.b.\r\n a .\r\n', rest: '' },
  {
    name: 'trailing bytes',
    input: 'x\r\n.\r\nMAIL FROM:<a@b>\r\n',
    output: 'x\r\n',
    rest: 'MAIL FROM:<a@b>\r\n',
  },
  { name: 'pipelined terminator and dot', input: 'x\r\n.\r\n.\r\n', output: 'x\r\n', rest: '.\r\n' },
  { name: 'line ending with dot', input: 'x.\r\n.\r\n', output: 'x.\r\n', rest: '' },
  { name: 'terminator-like without CRLF before', input: 'abc.\r\n.\r\n', output: 'abc.\r\n', rest: '' },
  { name: 'CR CR LF', input: 'a\r\r\n.\r\n', output: 'a\r\n\r\n', rest: '', bare: true },
  { name: 'bare LF', input: 'a\nb\r\n.\r\n', output: 'a\r\nb\r\n', rest: '', bare: true },
  { name: 'bare CR', input: 'a\rb\r\n.\r\n', output: 'a\r\nb\r\n', rest: '', bare: true },
  { name: 'bare LF at start', input: '\n.\r\n.\r\n', output: '\r\n.\r\n', rest: '', bare: true },
  { name: 'bare CR at start', input: '\r.\r\n.\r\n', output: '\r\n.\r\n', rest: '', bare: true },
  {
    name: 'bare LF, then stuffed-looking line',
    input: 'a\n..b\r\n.\r\n',
    output: 'a\r\n..b\r\n',
    rest: '',
    bare: true,
  },
  { name: 'LF LF', input: 'a\n\n.\r\n', output: 'a\r\n\r\n.\r\n', rest: undefined, bare: true },
  { name: 'no terminator', input: 'abc\r\ndef', output: 'abc\r\ndef', rest: undefined },
  { name: 'no terminator, pending CR', input: 'abc\r', output: 'abc', rest: undefined },
  { name: 'no terminator, pending dot', input: 'abc\r\n.', output: 'abc\r\n', rest: undefined },
  { name: 'no terminator, pending dot CR', input: 'abc\r\n.\r', output: 'abc\r\n', rest: undefined },
  smuggle('LF.LF', '\n.\n', '\r\n.\r\n'),
  smuggle('CRLF.LF', '\r\n.\n', '\r\n\r\n'),
  smuggle('LF.CRLF', '\n.\r\n', '\r\n.\r\n'),
  smuggle('CR.CR', '\r.\r', '\r\n.\r\n'),
  smuggle('CRLF.CR', '\r\n.\r', '\r\n\r\n'),
  smuggle('CR.CRLF', '\r.\r\n', '\r\n.\r\n'),
  smuggle('LF.CR', '\n.\r', '\r\n.\r\n'),
  smuggle('CR.LF', '\r.\n', '\r\n.\r\n'),
  smuggle('CRLF.CRCRLF', '\r\n.\r\r\n', '\r\n\r\n\r\n'),
  smuggle('CRLF.NUL CRLF', '\r\n.\0\r\n', '\r\n\0\r\n', false),
  {
    name: 'smuggling .LF at the very start',
    input: '.\nMAIL FROM:<x@y>\r\n.\r\n',
    output: '\r\nMAIL FROM:<x@y>\r\n',
    rest: '',
    bare: true,
  },
];

describe('DataDecoder vectors', () => {
  for (const v of vectors) {
    it(v.name, () => {
      const input = bytes(v.input);
      const expected = {
        output: v.output,
        size: v.output.length,
        overflow: false,
        bare: v.bare ?? false,
        end: v.rest === undefined ? -1 : input.length - v.rest.length,
      };
      expect(withoutCalls(whole(input))).toEqual(expected);
      expect(reference(v.input)).toEqual(expected);
      // Same result whatever the chunking.
      expect(withoutCalls(bytewise(input))).toEqual(expected);
      for (let k = 0; k <= input.length; k++) expect(withoutCalls(decode(input, [k]))).toEqual(expected);
    });
  }

  it('smuggled commands stay inside the message', () => {
    for (const v of vectors.filter((x) => x.name.startsWith('smuggling'))) {
      const r = whole(bytes(v.input));
      expect(r.output).toContain('MAIL FROM:<x@y>');
      expect(r.end).toBe(v.input.lastIndexOf(REAL_END) + REAL_END.length);
    }
  });

  it('finds a terminator split across every pair of chunk boundaries', () => {
    const text = 'Hi\r\n..x\r\n.\r\nNEXT\r\n';
    const input = bytes(text);
    for (let a = 0; a <= input.length; a++) {
      for (let b = a; b <= input.length; b++) {
        const r = decode(input, [a, b]);
        expect(r.output).toBe('Hi\r\n.x\r\n');
        expect(r.end).toBe(12);
        expect(input.subarray(r.end).toString()).toBe('NEXT\r\n');
      }
    }
  });

  it('returns the offset inside the chunk holding the terminator', () => {
    const d = new DataDecoder({ onData: () => {}, maxSize: Number.POSITIVE_INFINITY });
    expect(d.write(bytes('abc\r'))).toBe(-1);
    expect(d.write(bytes('\n.'))).toBe(-1);
    expect(d.write(bytes('\r'))).toBe(-1);
    expect(d.write(bytes('\nRSET\r\n'))).toBe(1);
    expect(d.done).toBe(true);
    expect(d.write(bytes('more'))).toBe(0);
  });

  it('emits slices of the input, not copies', () => {
    const text = 'line one\r\nline two\r\n..three\r\n.\r\n';
    // Not from the shared pool, so only slices of it share its ArrayBuffer.
    const input = Buffer.alloc(text.length);
    input.write(text, 'latin1');
    const pieces: Buffer[] = [];
    const d = new DataDecoder({ onData: (c) => pieces.push(c), maxSize: Number.POSITIVE_INFINITY });
    d.write(input);
    expect(pieces).toHaveLength(2);
    for (const p of pieces) expect(p.buffer).toBe(input.buffer);
  });
});

describe('DataDecoder maxSize', () => {
  it('stops emitting past maxSize, keeps counting and still finds the end', () => {
    const body = 'x'.repeat(100) + '\r\n';
    const text = body.repeat(10) + '.\r\nQUIT\r\n';
    const input = bytes(text);
    for (const r of [whole(input, 250), bytewise(input, 250), decode(input, [7, 333, 900], 250)]) {
      expect(r.overflow).toBe(true);
      expect(r.size).toBe(1020);
      expect(r.output).toBe(body.repeat(10).slice(0, 250));
      expect(r.end).toBe(text.length - 6);
    }
  });

  it('does not call onData after the overflow', () => {
    let calls = 0;
    let afterOverflow = 0;
    const d = new DataDecoder({
      onData: () => {
        calls++;
        if (d.overflow) afterOverflow++;
      },
      maxSize: 10,
    });
    for (let k = 0; k < 100; k++) d.write(bytes('0123456789\r\n'));
    expect(d.write(bytes('.\r\n'))).toBe(3);
    expect(calls).toBeGreaterThan(0);
    expect(afterOverflow).toBeLessThanOrEqual(1);
    expect(d.size).toBe(1200);
  });

  it('exactly maxSize is not an overflow', () => {
    const r = whole(bytes('abc\r\n.\r\n'), 5);
    expect(r.overflow).toBe(false);
    expect(r.output).toBe('abc\r\n');
    expect(withoutCalls(whole(bytes('abcd\r\n.\r\n'), 5))).toEqual(reference('abcd\r\n.\r\n', 5));
  });
});

/** Deterministic PRNG (mulberry32). */
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

describe('DataDecoder randomized against the reference', () => {
  it('agrees on 500 random inputs with random chunking and limits', () => {
    const random = prng(0x5eed);
    const alphabet = ['\r', '\n', '.', 'a'];
    for (let round = 0; round < 500; round++) {
      const length = Math.floor(random() * 40);
      let text = '';
      for (let k = 0; k < length; k++) text += alphabet[Math.floor(random() * alphabet.length)];
      // Most inputs get a real terminator (and something after it) somewhere.
      if (random() < 0.7) text += (random() < 0.5 ? '\r\n' : '') + '.\r\nX';
      const input = bytes(text);
      const splits: number[] = [];
      for (let k = 1; k < input.length; k++) if (random() < 0.3) splits.push(k);
      const maxSize = random() < 0.3 ? Math.floor(random() * 20) : Number.POSITIVE_INFINITY;
      const expected = reference(text, maxSize);
      expect(withoutCalls(whole(input, maxSize)), JSON.stringify(text)).toEqual(expected);
      expect(withoutCalls(decode(input, splits, maxSize)), JSON.stringify({ text, splits })).toEqual(
        expected,
      );
      expect(withoutCalls(bytewise(input, maxSize)), JSON.stringify(text)).toEqual(expected);
    }
  });
});

describe('DataDecoder randomized with long lines', () => {
  it('agrees with the reference on 200 inputs with runs of up to 400 octets', () => {
    const random = prng(0xbadc0de);
    const separators = ['\r\n', '\n', '\r', '.', '\r\n.', '\r\n..', '\r\r\n'];
    for (let round = 0; round < 200; round++) {
      let text = '';
      const segments = Math.floor(random() * 12);
      for (let k = 0; k < segments; k++) {
        text += 'a'.repeat(Math.floor(random() * 400));
        text += separators[Math.floor(random() * separators.length)];
      }
      if (random() < 0.7) text += '\r\n.\r\nX';
      const input = bytes(text);
      const splits: number[] = [];
      for (let k = 1; k < input.length; k++) if (random() < 0.01) splits.push(k);
      const maxSize = random() < 0.3 ? Math.floor(random() * 2000) : Number.POSITIVE_INFINITY;
      const expected = reference(text, maxSize);
      expect(withoutCalls(whole(input, maxSize))).toEqual(expected);
      expect(withoutCalls(decode(input, splits, maxSize))).toEqual(expected);
    }
  });
});

describe('DataDecoderStream', () => {
  it('decodes, reports the remainder and ends', async () => {
    const stream = new DataDecoderStream();
    let remainder: Buffer | undefined;
    stream.on('end-of-data', (rest: Buffer) => {
      remainder = rest;
    });
    Readable.from([bytes('Subject: a\r\n\r\n..hi\r'), bytes('\n.'), bytes('\r\nQUIT\r\n')]).pipe(stream);
    const out: Buffer[] = [];
    for await (const chunk of stream) out.push(chunk as Buffer);
    expect(Buffer.concat(out).toString()).toBe('Subject: a\r\n\r\n.hi\r\n');
    expect(remainder?.toString()).toBe('QUIT\r\n');
    expect(stream.decoder.done).toBe(true);
  });

  it('honours maxSize', async () => {
    const stream = new DataDecoderStream({ maxSize: 4 });
    Readable.from([bytes('abcdefgh\r\n.\r\n')]).pipe(stream);
    const out: Buffer[] = [];
    for await (const chunk of stream) out.push(chunk as Buffer);
    expect(Buffer.concat(out).toString()).toBe('abcd');
    expect(stream.decoder.overflow).toBe(true);
    expect(stream.decoder.size).toBe(10);
  });

  it('reports bytes written after the end as trailing', async () => {
    const stream = new DataDecoderStream();
    const trailing: string[] = [];
    stream.on('trailing', (chunk: Buffer) => trailing.push(chunk.toString()));
    stream.resume();
    stream.write(bytes('a\r\n.\r\n'));
    stream.write(bytes('NOOP\r\n'));
    await new Promise((resolve) => stream.end(resolve));
    expect(trailing).toEqual(['NOOP\r\n']);
  });

  it('fails when the input ends before the terminator', async () => {
    const stream = new DataDecoderStream();
    Readable.from([bytes('abc\r\n')]).pipe(stream);
    await expect(async () => {
      for await (const _ of stream) {
        // drain
      }
    }).rejects.toThrow(/terminator/);
  });
});
