/**
 * Properties of the PROXY protocol header parser (HAProxy spec, v1 and v2):
 * a formatted header reads back, every proper prefix of one asks for more,
 * arbitrary bytes never throw, and a verdict on a prefix never changes when
 * more bytes arrive (so how TCP splits the header cannot matter).
 */
import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ProxyParse, parseProxyHeader } from '../../core/proxy-protocol.ts';
import { RUNS } from './arbitraries.ts';

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

const port = fc.integer({ min: 0, max: 65535 });

/** The 16 octets of an IPv6 address in any valid text form. */
function ipv6Bytes(text: string): Buffer {
  let s = text;
  const tail: number[] = [];
  if (s.includes('.')) {
    const at = s.lastIndexOf(':');
    for (const part of s.slice(at + 1).split('.')) tail.push(Number(part));
    s = `${s.slice(0, at + 1)}0:0`;
  }
  const [head = '', rest] = s.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const groups = [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => {
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  if (tail.length === 4) Buffer.from(tail).copy(out, 12);
  return out;
}

interface V2Header {
  readonly family: 4 | 6;
  readonly src: Buffer;
  readonly dst: Buffer;
  readonly sport: number;
  readonly dport: number;
  readonly tlvs: Buffer;
  readonly local: boolean;
}

const v2Header: fc.Arbitrary<V2Header> = fc.constantFrom<4 | 6>(4, 6).chain((family) =>
  fc.record({
    family: fc.constant(family),
    src: fc
      .uint8Array({ minLength: family === 4 ? 4 : 16, maxLength: family === 4 ? 4 : 16 })
      .map(Buffer.from),
    dst: fc
      .uint8Array({ minLength: family === 4 ? 4 : 16, maxLength: family === 4 ? 4 : 16 })
      .map(Buffer.from),
    sport: port,
    dport: port,
    tlvs: fc.uint8Array({ maxLength: 40 }).map(Buffer.from),
    local: fc.boolean(),
  }),
);

function formatV2(h: V2Header): Buffer {
  const addresses = Buffer.concat([h.src, h.dst, Buffer.alloc(4)]);
  addresses.writeUInt16BE(h.sport, addresses.length - 4);
  addresses.writeUInt16BE(h.dport, addresses.length - 2);
  const body = Buffer.concat([addresses, h.tlvs]);
  const fixed = Buffer.alloc(4);
  fixed[0] = h.local ? 0x20 : 0x21;
  fixed[1] = (h.family === 4 ? 0x10 : 0x20) | 0x01; // TCP over IPv4 / IPv6
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, body]);
}

const v1Header = fc.oneof(
  fc.record({ family: fc.constant('TCP4'), src: fc.ipV4(), dst: fc.ipV4(), sport: port, dport: port }),
  fc.record({ family: fc.constant('TCP6'), src: fc.ipV6(), dst: fc.ipV6(), sport: port, dport: port }),
);

/** `PROXY UNKNOWN` and whatever the proxy put after it, some of it past the 107-octet limit. */
const v1Unknown = fc
  .string({ unit: fc.constantFrom('a', ':', '.', ' ', '1', 'f'), maxLength: 120, size: 'max' })
  .map((rest) => Buffer.from(`PROXY UNKNOWN${rest === '' ? '' : ` ${rest}`}\r\n`, 'latin1'));

/** Every proper prefix asks for more bytes; the whole reads back as `ok`. */
function expectPrefixesNeedMore(header: Buffer): void {
  for (let k = 0; k < header.length; k++)
    expect(parseProxyHeader(header.subarray(0, k)).kind).toBe('need-more');
}

describe('PROXY header properties', () => {
  it('v1: a formatted TCP4/TCP6 header reads back, followed by anything', () => {
    fc.assert(
      fc.property(v1Header, fc.uint8Array({ maxLength: 20 }), (h, after) => {
        const text = `PROXY ${h.family} ${h.src} ${h.dst} ${h.sport} ${h.dport}\r\n`;
        const header = Buffer.from(text, 'latin1');
        const r = parseProxyHeader(Buffer.concat([header, after]));
        if (header.length > 107) {
          // Longer than the spec's 107-octet maximum (IPv6 written with embedded IPv4).
          expect(r.kind).toBe('invalid');
          return;
        }
        expect(r).toEqual({
          kind: 'ok',
          header: { remote: { address: h.src, port: h.sport }, local: { address: h.dst, port: h.dport } },
          consumed: header.length,
        });
        expectPrefixesNeedMore(header);
      }),
      RUNS,
    );
  });

  it('v1: PROXY UNKNOWN with any tail reads back as no addresses, up to 107 octets, and is refused beyond', () => {
    fc.assert(
      fc.property(v1Unknown, fc.uint8Array({ maxLength: 20 }), (header, after) => {
        const r = parseProxyHeader(Buffer.concat([header, after]));
        if (header.length > 107) {
          expect(r.kind).toBe('invalid');
          return;
        }
        expect(r).toEqual({
          kind: 'ok',
          header: { remote: undefined, local: undefined },
          consumed: header.length,
        });
        expectPrefixesNeedMore(header);
      }),
      RUNS,
    );
  });

  it('v1: a header over 107 octets is refused whether it arrives whole or in pieces', () => {
    const long = 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255';
    const header = Buffer.from(`PROXY TCP6 ${long} ${long} 65535 25\r\nEHLO x\r\n`);
    expect(parseProxyHeader(header.subarray(0, 108)).kind).toBe('invalid');
    expect(parseProxyHeader(header).kind).toBe('invalid');
  });

  it('v2: a formatted PROXY or LOCAL header over IPv4/IPv6 with any TLVs reads back, followed by anything', () => {
    fc.assert(
      fc.property(v2Header, fc.uint8Array({ maxLength: 20 }), (h, after) => {
        const header = formatV2(h);
        const r = parseProxyHeader(Buffer.concat([header, after]));
        if (r.kind !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(r)}`);
        expect(r.consumed).toBe(header.length);
        if (h.local) {
          expect(r.header).toEqual({ remote: undefined, local: undefined });
        } else {
          const { remote, local } = r.header;
          expect(remote?.port).toBe(h.sport);
          expect(local?.port).toBe(h.dport);
          expect(isIP(remote?.address ?? '')).toBe(h.family);
          expect(isIP(local?.address ?? '')).toBe(h.family);
          const bytes = (a: string) =>
            h.family === 4 ? Buffer.from(a.split('.').map(Number)) : ipv6Bytes(a);
          expect(bytes(remote?.address ?? '').equals(h.src)).toBe(true);
          expect(bytes(local?.address ?? '').equals(h.dst)).toBe(true);
        }
        expectPrefixesNeedMore(header);
      }),
      RUNS,
    );
  });

  const anyStart = fc.oneof(
    fc.uint8Array({ maxLength: 120 }).map(Buffer.from),
    fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.concat([V2_SIGNATURE, Buffer.from(b)])),
    fc.string({ unit: 'binary-ascii', maxLength: 130 }).map((s) => Buffer.from(`PROXY ${s}`, 'latin1')),
    v1Unknown,
    fc
      .tuple(v1Header, fc.integer({ min: 0, max: 60 }), fc.string({ unit: 'binary-ascii', maxLength: 8 }))
      .map(([h, cut, junk]) => {
        const text = `PROXY ${h.family} ${h.src} ${h.dst} ${h.sport} ${h.dport}\r\n`;
        return Buffer.from(text.slice(0, cut) + junk + text.slice(cut), 'latin1');
      }),
  );

  it('never throws on arbitrary bytes, and an ok header never claims more than it was given', () => {
    fc.assert(
      fc.property(anyStart, (buf) => {
        const r = parseProxyHeader(buf);
        if (r.kind === 'ok') expect(r.consumed).toBeLessThanOrEqual(buf.length);
      }),
      RUNS,
    );
  });

  it('a verdict on a prefix stands when more bytes arrive', () => {
    fc.assert(
      fc.property(anyStart, fc.nat(), (buf, at) => {
        const whole = parseProxyHeader(buf);
        const k = at % (buf.length + 1);
        const part: ProxyParse = parseProxyHeader(buf.subarray(0, k));
        if (part.kind === 'invalid') expect(whole.kind).toBe('invalid');
        if (part.kind === 'ok') expect(whole).toEqual(part);
      }),
      RUNS,
    );
  });
});
