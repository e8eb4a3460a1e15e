/**
 * DKIM header canonicalisation (RFC 6376 3.4.1, 3.4.2) of `plugins/dkim`
 * against mailauth's, an independent implementation: any field made of the
 * octets relaxed canonicalisation cares about (SP, HTAB, folding, letter
 * case, octets above 127 such as the 0xA0 that ends many UTF-8 characters).
 */
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonField } from '../../plugins/dkim/canon.ts';
import { colonList, parseSignatureTags, parseTagList } from '../../plugins/dkim/tags.ts';
import { RUNS } from './arbitraries.ts';

/** mailauth's relaxed header line (untyped module): the field as latin1 text, canonicalised. */
const { formatRelaxedLine } = createRequire(import.meta.url)('mailauth/lib/tools.js') as {
  formatRelaxedLine: (line: Buffer) => Buffer;
};

const piece = fc.constantFrom(
  'a',
  'Sub',
  'JECT',
  ' ',
  '  ',
  '\t',
  '\r\n ',
  '\r\n\t',
  '\xa0',
  '\xc3\xa0',
  'x;y=z',
);
const field = fc
  .tuple(
    fc.array(fc.constantFrom('X', 'subj', 'Ect', ' ', '\t'), { minLength: 1, maxLength: 4 }),
    fc.array(piece, { maxLength: 20 }),
  )
  .map(([name, value]) => `${name.join('')}:${value.join('')}`)
  .filter((f) => !/^[ \t]*:/.test(f) && !/\r\n$/.test(f));

describe('DKIM header canonicalisation', () => {
  it('relaxed: the same octets as mailauth for any field', () => {
    fc.assert(
      fc.property(field, (f) => {
        expect(Buffer.from(canonField(f, 'relaxed'), 'latin1')).toEqual(
          formatRelaxedLine(Buffer.from(f, 'latin1')),
        );
      }),
      RUNS,
    );
  });

  it('simple: the field as it stands', () => {
    fc.assert(
      fc.property(field, (f) => {
        expect(canonField(f, 'simple')).toBe(f);
      }),
      RUNS,
    );
  });
});

/** The tag-list parser as it was written with regular expressions (the reference for the hand-written one). */
function referenceTagList(text: string): Map<string, string> | undefined {
  const fws = /[ \t]*\r\n[ \t]+|[ \t]+/g;
  const tags = new Map<string, string>();
  const specs = text.split(';');
  if (specs.length > 1 && (specs[specs.length - 1] as string).replace(fws, '') === '') specs.pop();
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    if (eq < 0) return undefined;
    const name = spec.slice(0, eq).replace(fws, '');
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name) || tags.has(name)) return undefined;
    tags.set(
      name,
      spec
        .slice(eq + 1)
        .replace(/^(?:[ \t]|\r\n)+/, '')
        .replace(/(?:[ \t]|\r\n)+$/, ''),
    );
  }
  return tags;
}

describe('DKIM tag lists', () => {
  const part = fc.constantFrom(
    'v',
    'b',
    'bh',
    'h',
    '=',
    ';',
    ':',
    '1',
    'a',
    ' ',
    '\t',
    '\r\n',
    '\r\n ',
    '\r',
    '\n',
  );
  it('parses any text as the regular expressions did', () => {
    fc.assert(
      fc.property(fc.array(part, { maxLength: 30 }), (p) => {
        const text = p.join('');
        expect(parseTagList(text)).toEqual(referenceTagList(text));
        expect(colonList(text)).toEqual(
          text.split(':').map((v) => v.replace(/[ \t]*\r\n[ \t]+|[ \t]+/g, '')),
        );
      }),
      RUNS,
    );
  });

  const signaturePart = fc.constantFrom(
    'v',
    'b',
    'bh',
    'h',
    'd',
    'x',
    'z',
    'B',
    '=',
    ';',
    '1',
    ' ',
    '\t',
    '\r\n',
    '\r\n ',
    '\r',
    '\n',
  );
  it("a DKIM-Signature's tags in one pass: what the tag list gives, and where b= lies", () => {
    const read = ['v', 'a', 'b', 'bh', 'c', 'd', 'h', 'i', 'l', 'q', 's', 't', 'x'] as const;
    fc.assert(
      fc.property(fc.array(signaturePart, { maxLength: 30 }), (p) => {
        const text = p.join('');
        const all = referenceTagList(text);
        const tags = parseSignatureTags(`DKIM-Signature:${text}`, 15);
        if (all === undefined) return void expect(tags).toBeUndefined();
        expect(tags).toBeDefined();
        for (const name of read) expect(tags?.[name]).toBe(all.get(name));
        const raw = `DKIM-Signature:${text}`;
        if (all.has('b') && tags)
          expect(raw.slice(0, tags.bEquals + 1) + raw.slice(tags.bEnd)).toBe(withoutBValue(raw));
      }),
      RUNS,
    );
  });
});

/** The field with its first `b=` tag's value deleted (RFC 6376 3.7), by the regular expression the verifier once used. */
function withoutBValue(raw: string): string {
  const colon = raw.indexOf(':') + 1;
  return (
    raw.slice(0, colon) + raw.slice(colon).replace(/((?:^|;)(?:[ \t]|\r\n)*b(?:[ \t]|\r\n)*=)[^;]*/, '$1')
  );
}
