/**
 * `TLS-Required: No` (RFC 8689 section 4) is read from the header section
 * only: a folded field counts, the same words in the body do not, and the
 * stream is not read past the end of the header section.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { tlsRequiredNo } from '../../plugins/deliver-mx/tls-required.ts';

const stream = (...parts: string[]) => Readable.from(parts.map((p) => Buffer.from(p, 'latin1')));

describe('TLS-Required: No', () => {
  it('is found in the header section, in any case, folded or split across chunks', async () => {
    expect(await tlsRequiredNo(stream('Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n'))).toBe(true);
    expect(await tlsRequiredNo(stream('tls-required:   NO  \r\n\r\n'))).toBe(true);
    expect(await tlsRequiredNo(stream('Subject: x\r\nTLS-Required:\r\n No\r\n\r\n'))).toBe(true);
    expect(await tlsRequiredNo(stream('Subject: x\r\nTLS-Req', 'uired: No\r', '\n\r\nbody'))).toBe(true);
  });

  it('does not count in the body, with another value, or as part of another field', async () => {
    expect(await tlsRequiredNo(stream('Subject: x\r\n\r\nTLS-Required: No\r\n'))).toBe(false);
    expect(await tlsRequiredNo(stream('TLS-Required: Yes\r\n\r\n'))).toBe(false);
    expect(await tlsRequiredNo(stream('X-TLS-Required: No\r\n\r\n'))).toBe(false);
    expect(await tlsRequiredNo(stream('Subject: TLS-Required: No\r\n\r\n'))).toBe(false);
  });

  it('stops reading at the end of the header section', async () => {
    let pulled = 0;
    const body = Readable.from(
      (function* () {
        yield Buffer.from('Subject: x\r\n\r\n');
        for (let i = 0; i < 1000; i++) {
          pulled++;
          yield Buffer.alloc(64 * 1024, 0x61);
        }
      })(),
    );
    expect(await tlsRequiredNo(body)).toBe(false);
    // At most the stream's read-ahead (16 objects), not the whole body.
    expect(pulled).toBeLessThanOrEqual(16);
  });
});
