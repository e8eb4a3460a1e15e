import { describe, expect, it } from 'vitest';
import { HeaderLimits, type HeaderViolation } from '../../core/codec/header-limits.ts';

interface Outcome {
  readonly violation: HeaderViolation | undefined;
  readonly done: boolean;
  /** Only compared when there is no violation (a violation stops counting where it was found). */
  readonly sectionSize: number | undefined;
  /** Likewise: `Received` fields counted. */
  readonly receivedFields: number | undefined;
}

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Feed `input` cut at the given split points. */
function scan(input: Buffer, splits: readonly number[], maxSection: number, maxField: number): Outcome {
  const h = new HeaderLimits({ maxSectionSize: maxSection, maxFieldLength: maxField });
  let from = 0;
  for (const to of [...splits, input.length]) {
    h.write(input.subarray(from, to));
    from = to;
  }
  return {
    violation: h.violation,
    done: h.done,
    sectionSize: h.violation ? undefined : h.sectionSize,
    receivedFields: h.violation ? undefined : h.receivedFields,
  };
}

const NAME_THEN_COLON = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;
const NAME_SO_FAR = /^[\x21-\x39\x3b-\x7e]+[ \t]*$/;
const RECEIVED = /^received[ \t]*:/i;

/** The same rules, written line by line over the whole input: what any chunking must agree with. */
function reference(input: Buffer, maxSection: number, maxField: number): Outcome {
  const text = input.toString('latin1');
  let fieldStart = -1;
  let violation: HeaderViolation | undefined;
  let received = 0;
  const over = (sectionEnd: number, fieldEnd: number): boolean => {
    const field = fieldStart >= 0 && fieldEnd - fieldStart > maxField;
    const section = sectionEnd > maxSection;
    if (field && section)
      violation = fieldStart + maxField < maxSection ? 'field-too-long' : 'section-too-big';
    else if (field) violation = 'field-too-long';
    else if (section) violation = 'section-too-big';
    return violation !== undefined;
  };
  const result = (done: boolean, size: number): Outcome => ({
    violation,
    done: done || violation !== undefined,
    sectionSize: violation ? undefined : size,
    receivedFields: violation ? undefined : received,
  });
  const end = (sectionEnd: number, fieldEnd: number) => {
    over(sectionEnd, fieldEnd);
    return result(true, sectionEnd);
  };
  let pos = 0;
  while (pos < text.length) {
    const lf = text.indexOf('\n', pos);
    const next = lf === -1 ? text.length : lf + 1;
    const line = text.slice(pos, next);
    const first = line[0] as string;
    if (first === '\n') return end(pos + 1, pos);
    if (first === '\r') {
      if (line.length === 1 && next === text.length) {
        over(text.length, pos);
        return result(false, text.length);
      }
      return end(pos + (line[1] === '\n' ? 2 : 1), pos);
    }
    if (first === ' ' || first === '\t') {
      if (fieldStart < 0) return end(pos, pos);
    } else if (NAME_THEN_COLON.test(line)) {
      if (over(pos, pos)) return result(true, 0);
      fieldStart = pos;
      if (RECEIVED.test(line)) received++;
    } else if (lf === -1 && NAME_SO_FAR.test(line)) {
      // The input ends inside a name: not yet known whether this line is header.
      if (over(pos, pos)) return result(true, 0);
      fieldStart = pos;
      over(pos, pos);
      return result(false, text.length);
    } else {
      return end(pos, pos);
    }
    pos = next;
  }
  over(text.length, text.length);
  return result(false, text.length);
}

/** A small seeded generator, so a failure names a reproducible case. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A message-like input: header lines, folding, odd lines, line endings of every kind. */
function randomMessage(rand: () => number): Buffer {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const eol = () => pick(['\r\n', '\r\n', '\r\n', '\n', '\r']);
  const word = () => 'x'.repeat(Math.floor(rand() * 12));
  let s = '';
  const lines = Math.floor(rand() * 12);
  for (let k = 0; k < lines; k++) {
    const kind = rand();
    if (kind < 0.55)
      s += `${pick(['Subject', 'To', 'X-A', 'Received', 'received', 'RECEIVED', 'Received-SPF', 'Receive', 'XReceived'])}${pick(['', ' ', '\t'])}:${word()}${eol()}`;
    else if (kind < 0.8) s += `${pick([' ', '\t'])}${word()}${eol()}`;
    else if (kind < 0.85) s += eol();
    else if (kind < 0.9) s += `no colon here${eol()}`;
    else if (kind < 0.93) s += `:empty name${eol()}`;
    else if (kind < 0.96) s += `Bad Name: x${eol()}`;
    else s += `Caf\xe9: x${eol()}`;
  }
  if (rand() < 0.5) s += `\r\nbody ${word()}\r\n`;
  if (rand() < 0.3) s += pick(['Trailing', 'Trail ', '\r', ' x']);
  return bytes(s);
}

describe('HeaderLimits', () => {
  it('lets a normal message through and ends at the empty line', () => {
    const msg = bytes('Subject: hi\r\nTo: a@b.example\r\n\r\nbody\r\n');
    expect(scan(msg, [], 1000, 100)).toEqual({
      violation: undefined,
      done: true,
      sectionSize: 32,
      receivedFields: 0,
    });
  });

  it('flags a header section over the limit', () => {
    const fields = 'X-Filler: 0123456789012345678901234567890123456789\r\n'.repeat(10);
    const msg = bytes(`${fields}\r\nbody\r\n`);
    expect(scan(msg, [], fields.length + 2, 1000).violation).toBeUndefined();
    expect(scan(msg, [], fields.length + 1, 1000).violation).toBe('section-too-big');
  });

  it('flags one field over the limit, counting its continuation lines and line endings', () => {
    const field = 'Subject: one\r\n two\r\n\tthree\r\n';
    const msg = bytes(`To: a@b.example\r\n${field}From: c@d.example\r\n\r\nbody\r\n`);
    expect(scan(msg, [], 10000, field.length).violation).toBeUndefined();
    expect(scan(msg, [], 10000, field.length - 1).violation).toBe('field-too-long');
  });

  it('flags a field still growing across chunks before it ends', () => {
    const h = new HeaderLimits({ maxSectionSize: 1 << 30, maxFieldLength: 1000 });
    h.write(bytes('Subject: '));
    for (let k = 0; k < 10 && !h.done; k++) h.write(bytes('y'.repeat(500)));
    expect(h.violation).toBe('field-too-long');
  });

  it('treats a first line that is no field as body: a long body line is not a header', () => {
    const msg = bytes(`${'z'.repeat(5000)}\r\n`);
    expect(scan(msg, [], 100, 100)).toEqual({
      violation: undefined,
      done: true,
      sectionSize: 0,
      receivedFields: 0,
    });
  });

  it('ignores everything after the header section', () => {
    const h = new HeaderLimits({ maxSectionSize: 100, maxFieldLength: 50 });
    h.write(bytes('A: b\r\n\r\n'));
    expect(h.done).toBe(true);
    h.write(bytes(`X: ${'y'.repeat(1000)}\r\n`));
    expect(h.violation).toBeUndefined();
    expect(h.sectionSize).toBe(8);
  });

  it('reports the limit an earlier octet crossed when both are exceeded', () => {
    // The field crosses its limit at octet 3 + 20, the section at 200.
    expect(scan(bytes(`X: ${'a'.repeat(300)}\r\n\r\n`), [], 200, 20).violation).toBe('field-too-long');
    // Many short fields cross the section limit long before the last, long field crosses its own.
    const msg = bytes(`${'A: b\r\n'.repeat(50)}X: ${'a'.repeat(300)}\r\n\r\n`);
    expect(scan(msg, [], 100, 250).violation).toBe('section-too-big');
  });

  it('counts Received fields at field starts, in any case, and nothing else', () => {
    const msg = bytes(
      [
        'Received: from a by b; Mon, 1 Dec 2026 00:00:00 +0000',
        ' (continued: Received: not a field)',
        'RECEIVED: x',
        'received : obsolete white space before the colon',
        'Received-SPF: pass',
        'X-Received: y',
        'Receive: z',
        'Subject: Received: no',
        '',
        'Received: in the body, not counted',
        '',
      ].join('\r\n'),
    );
    const h = new HeaderLimits({ maxSectionSize: 10000, maxFieldLength: 1000 });
    h.write(msg);
    expect(h.done).toBe(true);
    expect(h.receivedFields).toBe(3);
  });

  it('counts the same whatever the chunking: 101 fields cut at every offset of a field', () => {
    const field = 'Received: from relay.example by mx.example; Mon, 1 Dec 2026 00:00:00 +0000\r\n';
    const msg = bytes(`${field.repeat(101)}\r\nbody\r\n`);
    for (let cut = 1; cut <= field.length; cut++) {
      const splits: number[] = [];
      for (let at = cut; at < msg.length; at += field.length) splits.push(at);
      expect(scan(msg, splits, 1 << 20, 1000).receivedFields, `cut ${cut}`).toBe(101);
    }
    const everyByte = Array.from({ length: msg.length }, (_, k) => k);
    expect(scan(msg, everyByte, 1 << 20, 1000).receivedFields).toBe(101);
  });

  it('agrees with the line-by-line reference for every single cut of fixed cases', () => {
    const cases = [
      'Subject: a\r\n b\r\n\r\nbody',
      'A : b\r\nC:d\n\ne',
      'A: b\r\n\tc\r\n\r',
      'A: b\r\rbody',
      ' leading space\r\nA: b\r\n',
      'A: b\r\nno colon\r\nB: c\r\n\r\n',
      'Na me: x\r\n\r\n',
      'Received: a\r\nreceived\t: b\r\n c\r\nReceived-X: d\r\nRECEIVED:e\r\n\r\nReceived: f\r\n',
      'Received: a\r\nReceiv',
      `A: ${'x'.repeat(40)}\r\nB: ${'y'.repeat(10)}\r\n\r\n`,
    ];
    for (const c of cases) {
      const input = bytes(c);
      for (const [maxSection, maxField] of [
        [1000, 1000],
        [20, 1000],
        [1000, 12],
        [30, 25],
      ] as const) {
        const want = reference(input, maxSection, maxField);
        for (let cut = 0; cut <= input.length; cut++) {
          expect(scan(input, [cut], maxSection, maxField), `${JSON.stringify(c)} cut ${cut}`).toEqual(want);
        }
        const everyByte = Array.from({ length: input.length }, (_, k) => k);
        expect(scan(input, everyByte, maxSection, maxField)).toEqual(want);
      }
    }
  });

  it('agrees with the line-by-line reference under random inputs, limits and chunkings', () => {
    const rand = prng(20261204);
    for (let round = 0; round < 3000; round++) {
      const input = randomMessage(rand);
      const maxSection = Math.floor(rand() * 120);
      const maxField = Math.floor(rand() * 40);
      const splits: number[] = [];
      for (let at = 0; at < input.length; ) {
        at += 1 + Math.floor(rand() * 8);
        if (at < input.length) splits.push(at);
      }
      const want = reference(input, maxSection, maxField);
      const label = `round ${round}: ${JSON.stringify(input.toString('latin1'))} ${maxSection}/${maxField} at ${splits}`;
      expect(scan(input, splits, maxSection, maxField), label).toEqual(want);
      expect(scan(input, [], maxSection, maxField), label).toEqual(want);
    }
  });
});
