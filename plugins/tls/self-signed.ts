/**
 * A throwaway self-signed certificate made in memory (P-256 key, ECDSA with
 * SHA-256), for trying the server out and for tests. Node has no X.509
 * generator, so the certificate (RFC 5280 section 4.1) is assembled here in
 * DER. Clients cannot verify it: never use it for a real service.
 */
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';

export interface SelfSignedCertificate {
  /** PEM certificate. */
  readonly cert: string;
  /** PEM private key (PKCS #8). */
  readonly key: string;
}

const OID = {
  commonName: '2.5.4.3',
  subjectAltName: '2.5.29.17',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
} as const;

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

const sequence = (...parts: Buffer[]) => tlv(0x30, ...parts);
const set = (...parts: Buffer[]) => tlv(0x31, ...parts);
const utf8String = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
const octetString = (b: Buffer) => tlv(0x04, b);
const bitString = (b: Buffer) => tlv(0x03, Buffer.from([0]), b);
const explicit = (n: number, inner: Buffer) => tlv(0xa0 | n, inner);

/**
 * A non-negative INTEGER from its big-endian octets, in DER's minimal form
 * (X.690 8.3.2): leading zero octets dropped, one put back where the first
 * octet left has its high bit set (it would read as negative). A random
 * serial number starts with 0x00 now and then; OpenSSL refuses that
 * certificate ("illegal padding").
 */
export function derInteger(b: Buffer): Buffer {
  let start = 0;
  while (start < b.length - 1 && b[start] === 0) start++;
  const octets = b.subarray(start);
  return tlv(0x02, (octets[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), octets]) : octets);
}

function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out: number[] = [40 * (arcs[0] ?? 0) + (arcs[1] ?? 0)];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime before 2050, GeneralizedTime from then on (RFC 5280 section 4.1.2.5). */
function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  return d.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`))
    : tlv(0x18, Buffer.from(`${iso}Z`));
}

const name = (commonName: string) => sequence(set(sequence(oid(OID.commonName), utf8String(commonName))));

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Make a self-signed certificate for `commonName` (also its DNS subjectAltName). */
export function createSelfSignedCertificate(
  commonName: string,
  opts: { readonly days?: number; readonly now?: number } = {},
): SelfSignedCertificate {
  const now = opts.now ?? Date.now();
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const algorithm = sequence(oid(OID.ecdsaWithSha256));
  const serial = randomBytes(16);
  // Positive and never zero (RFC 5280 4.1.2.2).
  serial[15] = (serial[15] ?? 0) | 1;
  const san = sequence(tlv(0x82, Buffer.from(commonName, 'ascii'))); // dNSName [2] IMPLICIT IA5String
  const tbs = sequence(
    explicit(0, derInteger(Buffer.from([2]))), // v3
    derInteger(serial),
    algorithm,
    name(commonName),
    sequence(time(new Date(now - 3600_000)), time(new Date(now + (opts.days ?? 365) * 86400_000))),
    name(commonName),
    publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, sequence(sequence(oid(OID.subjectAltName), octetString(san)))),
  );
  const signature = sign('sha256', tbs, privateKey);
  const certificate = sequence(tbs, algorithm, bitString(signature));
  return {
    cert: pem('CERTIFICATE', certificate),
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}
