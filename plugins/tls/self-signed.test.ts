import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createSelfSignedCertificate, derInteger } from './self-signed.ts';

describe('self-signed certificate', () => {
  it('encodes INTEGERs minimally: leading zero octets dropped, one added before a high bit', () => {
    const hex = (b: Buffer) => derInteger(b).toString('hex');
    expect(hex(Buffer.from([0x00, 0x01, 0x02]))).toBe('02020102');
    expect(hex(Buffer.from([0x00, 0x00, 0x85]))).toBe('02020085');
    expect(hex(Buffer.from([0x85, 0x01]))).toBe('0203008501');
    expect(hex(Buffer.from([0x00]))).toBe('020100');
    expect(hex(Buffer.from([0x02]))).toBe('020102');
  });

  it('makes certificates OpenSSL parses, whatever the random serial (a few hundred of them)', () => {
    // Before: a serial starting 0x00 then < 0x80 (1 in 256) gave "illegal padding".
    for (let i = 0; i < 400; i++) {
      const { cert } = createSelfSignedCertificate('mx.example.test');
      const x = new X509Certificate(cert);
      expect(x.subject).toBe('CN=mx.example.test');
      expect(x.serialNumber).toMatch(/^[0-9A-F]+$/);
    }
  });
});
