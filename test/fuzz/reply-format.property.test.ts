/**
 * Properties of the reply formatter (RFC 5321 4.2, RFC 2034): any reply,
 * single or multi-line, with or without an enhanced code, comes out as lines
 * that end in CR LF, carry the same code, use `-` on every line but the last,
 * and parse back to the reply's code, enhanced code and (cleaned) text.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatReply } from '../../core/codec/reply-format.ts';
import { Replies, type Reply, reply } from '../../core/reply.ts';
import { RUNS, smtpText } from './arbitraries.ts';

interface ParsedReply {
  readonly code: number;
  readonly enhanced: string | undefined;
  readonly lines: readonly string[];
}

/** A client's reading of reply lines (RFC 5321 4.2.1); throws on anything malformed. */
function parseReplyLines(wire: string, withEnhanced: boolean): ParsedReply {
  expect(wire.endsWith('\r\n')).toBe(true);
  const raw = wire.slice(0, -2).split('\r\n');
  let code = -1;
  let enhanced: string | undefined;
  const lines: string[] = [];
  raw.forEach((l, i) => {
    expect(l).not.toMatch(/[\r\n]/);
    const m = /^([2-5][0-9][0-9])([- ])(.*)$/s.exec(l);
    if (m === null) throw new Error(`bad reply line ${JSON.stringify(l)}`);
    const [, c, sep, rest] = m as unknown as [string, string, string, string];
    if (code === -1) code = Number(c);
    expect(Number(c)).toBe(code);
    expect(sep).toBe(i === raw.length - 1 ? ' ' : '-');
    let text = rest;
    if (withEnhanced) {
      const e = /^([245]\.[0-9]{1,3}\.[0-9]{1,3}) (.*)$/s.exec(rest);
      if (e !== null) {
        if (i === 0) enhanced = e[1];
        expect(e[1]).toBe(enhanced);
        text = e[2] as string;
      } else expect(enhanced).toBeUndefined();
    }
    lines.push(text);
  });
  return { code, enhanced, lines };
}

const code = fc.integer({ min: 200, max: 599 });
const enhancedFor = (c: number) =>
  fc
    .tuple(fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 999 }))
    .map(([s, d]) => `${Math.floor(c / 100)}.${s}.${d}`);
const anyReply: fc.Arbitrary<Reply> = code.chain((c) =>
  fc
    .record({
      // RFC 3463 classes are 2, 4 and 5: a 3xx reply has no enhanced code.
      enhanced: c < 300 || c >= 400 ? fc.option(enhancedFor(c), { nil: undefined }) : fc.constant(undefined),
      text: fc.oneof(smtpText(40), fc.array(smtpText(30), { maxLength: 5 })),
    })
    .map(({ enhanced, text }) => reply(c, enhanced, text)),
);

const clean = (s: string) => s.replace(/[\r\n]+/g, ' ');

describe('reply formatter properties', () => {
  it('formats any reply into CRLF lines that parse back to its code, enhanced code and text', () => {
    fc.assert(
      fc.property(anyReply, fc.boolean(), (r, withEnhanced) => {
        const wire = formatReply(r, withEnhanced);
        const parsed = parseReplyLines(wire, withEnhanced && r.enhanced !== undefined);
        const texts = typeof r.text === 'string' ? [r.text] : r.text.length === 0 ? [''] : r.text;
        expect(parsed.code).toBe(r.code);
        expect(parsed.enhanced).toBe(withEnhanced && r.code !== 354 ? r.enhanced : undefined);
        expect(parsed.lines).toEqual(texts.map(clean));
      }),
      RUNS,
    );
  });

  it('catalogue replies: enhanced class matches the reply class, and cached text equals fresh text', () => {
    for (const r of Object.values(Replies)) {
      expect(r.code).toBeGreaterThanOrEqual(200);
      expect(r.code).toBeLessThan(600);
      if (r.enhanced !== undefined) expect(r.enhanced.startsWith(`${Math.floor(r.code / 100)}.`)).toBe(true);
      for (const withEnhanced of [false, true]) {
        const fresh = formatReply({ ...r }, withEnhanced);
        expect(formatReply(r, withEnhanced)).toBe(fresh);
        expect(formatReply(r, withEnhanced)).toBe(fresh);
        parseReplyLines(fresh, withEnhanced && r.enhanced !== undefined);
      }
    }
  });
});
