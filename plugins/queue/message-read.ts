/** Reading parts of a queued message back for bounces and `queue show`. */
import type { Readable } from 'node:stream';

const HEADER_END = Buffer.from('\r\n\r\n');

/**
 * The header section of the message in `stream` (up to and including the CRLF
 * of its last field), at most `cap` octets, cut at a line end. Destroys the
 * stream once it has enough.
 */
export async function readHeaderSection(stream: Readable, cap = 256 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const b = chunk as Buffer;
      parts.push(b);
      size += b.length;
      const all = Buffer.concat(parts, size);
      if (all.length >= 2 && all[0] === 13 && all[1] === 10) return Buffer.alloc(0);
      const end = all.indexOf(HEADER_END);
      if (end >= 0) return all.subarray(0, Math.min(end + 2, cap));
      if (size >= cap) return cutAtLine(all.subarray(0, cap));
      parts.length = 0;
      parts.push(all);
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(parts, size);
}

function cutAtLine(b: Buffer): Buffer {
  const eol = b.lastIndexOf('\r\n');
  return eol < 0 ? b : b.subarray(0, eol + 2);
}

/** The whole stream, refusing more than `max` octets. */
export async function readAll(stream: Readable, max: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const b = chunk as Buffer;
      size += b.length;
      if (size > max) throw new RangeError(`message larger than ${max} octets`);
      parts.push(b);
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(parts, size);
}
