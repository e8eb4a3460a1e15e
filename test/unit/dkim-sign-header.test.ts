/** dkim-sign's header-section reader, fed in small chunks. */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readHeaderSection } from '../../plugins/dkim-sign/header.ts';

const chunked = (text: string, size: number): Readable => {
  const chunks: Buffer[] = [];
  for (let i = 0; i < text.length; i += size) chunks.push(Buffer.from(text.slice(i, i + size), 'latin1'));
  return Readable.from(chunks);
};

describe('readHeaderSection', () => {
  it('finds the end of the header section across chunk boundaries', async () => {
    const msg = 'From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n\r\nmore\r\n';
    for (const size of [1, 2, 3, 5, 64])
      expect(await readHeaderSection(chunked(msg, size), 1024)).toBe(
        'From: a@example.org\r\nSubject: hi\r\n',
      );
  });

  it('is empty when the message has no header fields, not the body', async () => {
    expect(await readHeaderSection(chunked('\r\nFrom: body@example.org\r\n\r\nx\r\n', 4), 1024)).toBe('');
  });

  it('is undefined past max octets', async () => {
    expect(await readHeaderSection(chunked(`X: ${'a'.repeat(100)}\r\n\r\n`, 8), 32)).toBeUndefined();
  });
});
