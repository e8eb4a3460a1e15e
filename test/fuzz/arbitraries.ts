/** Shared fast-check arbitraries for the codec property tests. */
import fc from 'fast-check';

/** Runs per property: enough to find the usual edge cases, small enough that the whole suite takes seconds. */
export const RUNS = { numRuns: 300 } as const;

/** Bytes drawn mostly from the octets that matter to SMTP framing, with the odd arbitrary one. */
export function smtpBytes(maxLength = 200): fc.Arbitrary<Buffer> {
  const octet = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(0x0d, 0x0a, 0x2e, 0x20, 0x41, 0x62) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 255 }) },
  );
  const piece = fc.oneof(
    fc.array(octet, { maxLength: 12 }),
    fc.constantFrom([0x0d, 0x0a], [0x0d, 0x0a, 0x2e, 0x0d, 0x0a], [0x0a, 0x2e, 0x0a], [0x2e, 0x2e], [0x0d]),
  );
  return fc
    .array(piece, { maxLength: Math.ceil(maxLength / 4) })
    .map((pieces) => Buffer.from(pieces.flat().slice(0, maxLength)));
}

/** Split `buf` at arbitrary points (empty pieces included), as TCP may deliver it. */
export function chunks(buf: Buffer): fc.Arbitrary<Buffer[]> {
  return fc.array(fc.integer({ min: 0, max: buf.length }), { maxLength: 8 }).map((cuts) => {
    const points = [0, ...cuts.sort((a, b) => a - b), buf.length];
    const out: Buffer[] = [];
    for (let i = 1; i < points.length; i++) out.push(buf.subarray(points[i - 1], points[i]));
    return out;
  });
}

/** Bytes together with one way of splitting them. */
export function chunkedBytes(maxLength = 200): fc.Arbitrary<{ bytes: Buffer; pieces: Buffer[] }> {
  return smtpBytes(maxLength).chain((bytes) => chunks(bytes).map((pieces) => ({ bytes, pieces })));
}

const ALPHA = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const DIGIT = '0123456789';
const chars = (set: string): fc.Arbitrary<string> => fc.constantFrom(...set);

/** RFC 5322 atext, ASCII. */
export const atom: fc.Arbitrary<string> = fc.string({
  unit: chars(`${ALPHA}${DIGIT}!#$%&'*+-/=?^_\`{|}~`),
  minLength: 1,
  maxLength: 8,
});
/** RFC 5321 Dot-string. */
const dotString: fc.Arbitrary<string> = fc
  .array(atom, { minLength: 1, maxLength: 4 })
  .map((atoms) => atoms.join('.'));
/** RFC 5321 Quoted-string: qtextSMTP or a backslash pair. */
const quotedString: fc.Arbitrary<string> = fc
  .array(
    fc.oneof(
      fc
        .integer({ min: 32, max: 126 })
        .filter((c) => c !== 0x22 && c !== 0x5c)
        .map((c) => String.fromCharCode(c)),
      fc.integer({ min: 32, max: 126 }).map((c) => `\\${String.fromCharCode(c)}`),
    ),
    { maxLength: 12 },
  )
  .map((parts) => `"${parts.join('')}"`);
/** Let-dig [Ldh-str]. */
export const label: fc.Arbitrary<string> = fc
  .tuple(
    chars(ALPHA + DIGIT),
    fc.string({ unit: chars(`${ALPHA}${DIGIT}-`), maxLength: 8 }),
    chars(ALPHA + DIGIT),
  )
  .map(([first, middle, last]) => (middle === '' ? first : first + middle + last));
/** An ASCII domain name. */
export const domainName: fc.Arbitrary<string> = fc
  .array(label, { minLength: 1, maxLength: 4 })
  .map((labels) => labels.join('.'));
/** A domain or an address literal. */
export const domain: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: domainName },
  { weight: 1, arbitrary: fc.ipV4().map((ip) => `[${ip}]`) },
  { weight: 1, arbitrary: fc.ipV6().map((ip) => `[IPv6:${ip}]`) },
);
/** A mailbox `local@domain` within the RFC 5321 limits. */
export const mailbox: fc.Arbitrary<{ local: string; domain: string }> = fc.record({
  local: fc.oneof(dotString, quotedString),
  domain,
});

/** Text made mostly of the characters SMTP syntax cares about. */
export function smtpText(maxLength = 80): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ unit: 'binary', maxLength }),
    fc.string({
      unit: fc.oneof(
        { weight: 8, arbitrary: chars('<>@".:,[]\\ =+-aZ09\r\n\t') },
        { weight: 1, arbitrary: chars('é€\u{10348}\u0000\u007f') },
      ),
      maxLength,
    }),
  );
}
