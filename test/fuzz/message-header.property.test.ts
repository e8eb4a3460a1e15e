/**
 * The shared header parser of `mailframe/policy` (`plugins/policy/message-header.ts`)
 * against the regular-expression split it replaced (a field ends at a CRLF not
 * followed by WSP; its name is the text before the first colon, WSP around it
 * removed, ASCII letters in lower case): the same fields for any header section
 * made of the octets that matter (CR, LF, SP, HTAB, colons, letter case,
 * octets above 127).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fieldName, parseHeaderFields, parseMessageHeader } from '../../plugins/policy/message-header.ts';
import { RUNS } from './arbitraries.ts';

function referenceName(text: string): string {
  return text.replace(/^[ \t]+|[ \t]+$/g, '').replace(/[A-Z]+/g, (s) => s.toLowerCase());
}

function referenceFields(section: string): { name: string; raw: string }[] {
  const out: { name: string; raw: string }[] = [];
  for (const raw of section.replace(/\r\n$/, '').split(/\r\n(?![ \t])/)) {
    const colon = raw.indexOf(':');
    if (colon > 0) out.push({ name: referenceName(raw.slice(0, colon)), raw });
  }
  return out;
}

const piece = fc.constantFrom(
  'From',
  'subJECT',
  'x',
  ':',
  ' ',
  '\t',
  '\r\n',
  '\r\n ',
  '\r\n\t',
  '\r',
  '\n',
  '\xa0',
  '\xc0',
  '\xc3\xa0',
  'a@b.example',
);
const section = fc.array(piece, { maxLength: 40 }).map((p) => p.join(''));

describe('messageHeader: the shared header parser', () => {
  it('splits any header section into the same fields as the regular expressions', () => {
    fc.assert(
      fc.property(section, (text) => {
        const fields = parseHeaderFields(text);
        expect(fields.map(({ name, raw }) => ({ name, raw }))).toEqual(referenceFields(text));
        // `end` is just past each field's CRLF (or the end of the section).
        for (const f of fields) {
          const stop = f.end - 2;
          expect(text.slice(stop - f.raw.length, stop)).toBe(f.raw);
        }
      }),
      RUNS,
    );
  });

  it('reads field names as DKIM does: WSP around them removed, only ASCII letters lowered', () => {
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 8 }), (p) => {
        const name = p.join('');
        expect(fieldName(name)).toBe(referenceName(name));
      }),
      RUNS,
    );
  });

  it('finds the header section and the body of a whole message', () => {
    const m = parseMessageHeader(Buffer.from('A: 1\r\nB: 2\r\n x\r\n\r\nbody\r\n', 'latin1'));
    expect(m.text).toBe('A: 1\r\nB: 2\r\n x\r\n');
    expect(m.buffer.subarray(m.bodyStart).toString()).toBe('body\r\n');
    expect(m.fields.map((f) => f.name)).toEqual(['a', 'b']);
    const none = parseMessageHeader(Buffer.from('\r\nbody\r\n'));
    expect([none.text, none.bodyStart, none.fields.length]).toEqual(['', 2, 0]);
    const noBody = parseMessageHeader(Buffer.from('A: 1\r\n'));
    expect([noBody.text, noBody.bodyStart]).toEqual(['A: 1\r\n', 6]);
  });
});
