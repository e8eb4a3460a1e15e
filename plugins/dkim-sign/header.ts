import type { Readable } from 'node:stream';

/**
 * The header section of a message stream (its fields, each line with its
 * CRLF, without the empty line), or undefined when it is longer than `max`
 * octets. The stream is destroyed after.
 */
export async function readHeaderSection(stream: Readable, max: number): Promise<string | undefined> {
  const parts: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const buf = chunk as Buffer;
      const from = Math.max(0, size - 3);
      parts.push(buf);
      size += buf.length;
      const all = Buffer.concat(parts, size);
      // No header fields: the message starts with the empty line.
      if (size >= 2 && all[0] === 13 && all[1] === 10) return '';
      // Only the new chunk (and the 3 octets before it) can hold the end not found so far.
      const end = all.indexOf('\r\n\r\n', from);
      if (end >= 0) return all.subarray(0, end + 2).toString('latin1');
      if (size >= max) return undefined;
      parts.length = 0;
      parts.push(all);
    }
    return Buffer.concat(parts, size).toString('latin1');
  } finally {
    stream.destroy();
  }
}
