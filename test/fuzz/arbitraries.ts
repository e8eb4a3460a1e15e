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
