/**
 * Properties of the command parser: verb and argument split, ESMTP parameters
 * and MAIL/RCPT arguments read back what was formatted, xtext decodes what was
 * encoded, and no line makes any of them throw.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeXtext,
  parseCommand,
  parseMailArgument,
  parseParams,
  peekParams,
} from '../../core/codec/command.ts';
import { mailbox, RUNS, smtpText } from './arbitraries.ts';

const keyword = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9-]{0,10}$/);
const value = fc.string({
  unit: fc
    .integer({ min: 33, max: 126 })
    .filter((c) => c !== 0x3d)
    .map((c) => String.fromCharCode(c)),
  minLength: 1,
  maxLength: 12,
});
/** Parameters with distinct keywords (case-insensitively), each with a value or none. */
const params = fc.uniqueArray(fc.tuple(keyword, fc.option(value, { nil: undefined })), {
  maxLength: 5,
  selector: ([k]) => k.toUpperCase(),
});
const gap = fc.stringMatching(/^ {1,3}$/);

function formatParams(list: readonly [string, string | undefined][], gaps: readonly string[]): string {
  return list
    .map(([k, v], i) => (i === 0 ? '' : (gaps[i] ?? ' ')) + (v === undefined ? k : `${k}=${v}`))
    .join('');
}

function expectedParams(list: readonly [string, string | undefined][]): Map<string, string | true> {
  return new Map(list.map(([k, v]) => [k.toUpperCase(), v ?? true]));
}

/** RFC 3461 xtext encoding of the UTF-8 octets of `s`. */
function encodeXtext(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    out +=
      b < 33 || b > 126 || b === 0x2b || b === 0x3d
        ? `+${b.toString(16).toUpperCase().padStart(2, '0')}`
        : String.fromCharCode(b);
  }
  return out;
}

describe('command parser properties', () => {
  it('splits any line into an ASCII upper-case verb and the argument without trailing spaces', () => {
    fc.assert(
      fc.property(
        smtpText(20).filter((v) => !v.includes(' ')),
        smtpText(),
        (verb, argument) => {
          const c = parseCommand(`${verb} ${argument}`);
          expect(c.verb).toBe(verb.replace(/[a-z]+/g, (m) => m.toUpperCase()));
          expect(c.argument).toBe(argument.replace(/ +$/, ''));
          expect(parseCommand(verb)).toEqual({ verb: c.verb, argument: '' });
        },
      ),
      RUNS,
    );
  });

  it('reads back any ESMTP parameters, keywords upper-cased', () => {
    fc.assert(
      fc.property(params, fc.array(gap, { maxLength: 5 }), gap, fc.boolean(), (list, gaps, edge, utf8) => {
        const text = formatParams(list, gaps);
        expect(parseParams(text, utf8)).toEqual(expectedParams(list));
        expect(parseParams(`${edge}${text}${edge}`, utf8)).toEqual(expectedParams(list));
      }),
      RUNS,
    );
  });

  it('reads back a MAIL FROM / RCPT TO argument with any path and parameters', () => {
    fc.assert(
      fc.property(
        mailbox,
        params,
        fc.constantFrom<'FROM' | 'TO'>('FROM', 'TO'),
        fc.stringMatching(/^ {0,2}$/),
        (m, list, prefix, afterColon) => {
          const path = `<${m.local}@${m.domain}>`;
          fc.pre(Buffer.byteLength(m.local) <= 64 && path.length <= 256);
          const paramText = formatParams(list, []);
          const arg = `${prefix.toLowerCase()}:${afterColon}${path}${paramText === '' ? '' : ` ${paramText}`}`;
          const r = parseMailArgument(arg, prefix, { utf8: false, allowNull: true, allowPostmaster: true });
          if (!r.ok) throw new Error(`${arg}: ${r.error}`);
          expect(r.address?.address).toBe(`${m.local}@${m.domain}`);
          expect(r.params).toEqual(expectedParams(list));
          expect(peekParams(arg, prefix)).toEqual({ pathText: path, paramsText: paramText });
        },
      ),
      RUNS,
    );
  });

  it('decodes xtext back to the text that was encoded', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 30 }), (s) => {
        expect(decodeXtext(encodeXtext(s))).toBe(s);
      }),
      RUNS,
    );
  });

  it('never throws on arbitrary lines; parameters it accepts are well formed', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          smtpText(),
          smtpText(40).map((s) => `FROM:<a@b.example> ${s}`),
          smtpText(40).map((s) => `TO:${s}`),
        ),
        fc.boolean(),
        (line, utf8) => {
          parseCommand(line);
          decodeXtext(line);
          for (const prefix of ['FROM', 'TO'] as const) {
            peekParams(line, prefix);
            parseMailArgument(line, prefix, { utf8, allowNull: true, allowPostmaster: true });
          }
          const p = parseParams(line, utf8);
          for (const [k, v] of p ?? []) {
            expect(k).toMatch(/^[A-Z0-9][A-Z0-9-]*$/);
            if (v !== true) expect(v).not.toMatch(/[\s=]/);
          }
        },
      ),
      RUNS,
    );
  });
});
