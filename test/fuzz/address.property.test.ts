/**
 * Properties of the RFC 5321 path parser: valid mailboxes read back exactly,
 * source routes are ignored, a parsed address parses again to itself, the
 * limits always hold, and no input makes it throw.
 */
import { domainToASCII } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isValidHeloDomain, type PathOptions, parseMailbox, parsePath } from '../../core/address.ts';
import { domainName, label, mailbox, RUNS, smtpText } from './arbitraries.ts';

const options: fc.Arbitrary<PathOptions> = fc.record({
  utf8: fc.boolean(),
  allowNull: fc.boolean(),
  allowPostmaster: fc.boolean(),
});

const octets = (s: string) => Buffer.byteLength(s, 'utf8');
const nonAscii = (s: string) => /[^\u0000-\u007f]/.test(s);

/** UTF-8 local parts and domains with at least one U-label (RFC 6531). */
const uLabel = fc
  .string({ unit: fc.constantFrom(...'aézüñßøåçдяж中文日本ΩλxYZ09-'), minLength: 1, maxLength: 10 })
  .filter((l) => !l.startsWith('-') && !l.endsWith('-'));
const uDomain = fc
  .array(uLabel, { minLength: 1, maxLength: 3 })
  .map((labels) => labels.join('.'))
  .filter((d) => nonAscii(d));
const uLocal = fc
  .string({ unit: fc.constantFrom(...'aéü中x.+_'), minLength: 1, maxLength: 10 })
  .filter((l) => !l.startsWith('.') && !l.endsWith('.') && !l.includes('..'));

describe('address parser properties', () => {
  it('reads back any mailbox within the limits, with any parameters after it', () => {
    fc.assert(
      fc.property(mailbox, options, fc.constantFrom('', ' ', ' SIZE=10 BODY=8BITMIME'), (m, opts, rest) => {
        const path = `<${m.local}@${m.domain}>`;
        fc.pre(octets(m.local) <= 64 && octets(path) <= 256 && m.domain.length <= 255);
        const r = parsePath(path + rest, opts);
        if (!r.ok) throw new Error(`${path}: ${r.error}`);
        expect(r.rest).toBe(rest);
        expect(r.address?.localPart).toBe(m.local);
        expect(r.address?.domain).toBe(m.domain);
        expect(r.address?.asciiDomain).toBe(m.domain.toLowerCase());
        expect(r.address?.address).toBe(`${m.local}@${m.domain}`);
        expect(r.address?.unicode).toBe(false);
      }),
      RUNS,
    );
  });

  it('with SMTPUTF8, reads back UTF-8 mailboxes; the ASCII domain is the A-label form', () => {
    const opts: PathOptions = { utf8: true, allowNull: false, allowPostmaster: false };
    fc.assert(
      fc.property(uLocal, uDomain, (local, domain) => {
        const ascii = domainToASCII(domain);
        const r = parsePath(`<${local}@${domain}>`, opts);
        if (ascii === '') {
          expect(r.ok).toBe(false);
          return;
        }
        if (!r.ok) throw new Error(`<${local}@${domain}>: ${r.error}`);
        expect(r.address?.localPart).toBe(local);
        expect(r.address?.asciiDomain).toBe(ascii);
        expect(r.address?.unicode).toBe(true);
        expect(parsePath(`<${local}@${domain}>`, { ...opts, utf8: false })).toEqual({
          ok: false,
          error: 'non-ascii',
        });
      }),
      RUNS,
    );
  });

  it('ignores a source route', () => {
    fc.assert(
      fc.property(
        mailbox,
        fc.array(domainName, { minLength: 1, maxLength: 3 }),
        options,
        (m, route, opts) => {
          const plain = `<${m.local}@${m.domain}>`;
          const routed = `<${route.map((d) => `@${d}`).join(',')}:${m.local}@${m.domain}>`;
          fc.pre(octets(m.local) <= 64 && octets(routed) <= 256);
          expect(parsePath(routed, opts)).toEqual(parsePath(plain, opts));
        },
      ),
      RUNS,
    );
  });

  it('refuses a local part over 64 octets and a path over 256 as too long', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 65, max: 120 }),
        fc.array(label, { minLength: 1, maxLength: 40 }),
        options,
        (n, labels, opts) => {
          const local = 'x'.repeat(n);
          expect(parsePath(`<${local}@example.com>`, opts)).toEqual({ ok: false, error: 'too-long' });
          const longDomain = labels.join('.');
          const r = parsePath(`<a@${longDomain}>`, opts);
          if (`<a@${longDomain}>`.length > 256) expect(r).toEqual({ ok: false, error: 'too-long' });
        },
      ),
      RUNS,
    );
  });

  it('never throws; whatever it accepts keeps the limits, parses again to itself, and agrees with parseMailbox', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          smtpText(),
          fc.tuple(smtpText(20), smtpText(20)).map(([a, b]) => `<${a}@${b}>`),
          mailbox.chain((m) => smtpText(6).map((noise) => `<${m.local}${noise}@${m.domain}>`)),
        ),
        options,
        (input, opts) => {
          const r = parsePath(input, opts);
          if (!r.ok || r.address === null) return;
          const a = r.address;
          expect(octets(a.localPart)).toBeLessThanOrEqual(64);
          expect(octets(a.address)).toBeLessThanOrEqual(254);
          if (!opts.utf8) expect(nonAscii(a.address)).toBe(false);
          expect(a.unicode).toBe(nonAscii(a.address));
          const again = parsePath(`<${a.address}>`, opts);
          expect(again).toEqual({ ok: true, address: a, rest: '' });
          if (a.domain !== '') {
            expect(parseMailbox(a.address, opts)).toEqual({ ok: true, address: a });
          }
        },
      ),
      RUNS,
    );
  });

  it('parseMailbox never throws and accepts exactly what parsePath accepts in angle brackets', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          smtpText(),
          mailbox.map((m) => `${m.local}@${m.domain}`),
        ),
        fc.boolean(),
        (input, utf8) => {
          const box = parseMailbox(input, { utf8 });
          const opts = { utf8, allowNull: false, allowPostmaster: false };
          const path = parsePath(`<${input}>`, opts);
          // Inputs that the path syntax itself reads differently (a `>`, a source route) are not comparable.
          if (!path.ok || path.rest !== '' || input.startsWith('@')) return;
          expect(box).toEqual({ ok: true, address: path.address });
        },
      ),
      RUNS,
    );
  });

  it('accepts any domain name or address literal as an EHLO argument, and never throws', () => {
    fc.assert(
      fc.property(domainName, (d) => {
        fc.pre(d.length <= 255);
        expect(isValidHeloDomain(d)).toBe(true);
      }),
      RUNS,
    );
    fc.assert(
      fc.property(smtpText(), (s) => {
        isValidHeloDomain(s);
      }),
      RUNS,
    );
  });
});
