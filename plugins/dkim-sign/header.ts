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
      parts.push(buf);
      size += buf.length;
      const all = Buffer.concat(parts, size);
      const end = all.indexOf('\r\n\r\n');
      if (end >= 0) return all.subarray(0, end + 2).toString('latin1');
      if (size >= max) return undefined;
    }
    return Buffer.concat(parts, size).toString('latin1');
  } finally {
    stream.destroy();
  }
}

/** The domain of the first address in the (last) From field, lower case; undefined when there is none. */
export function senderDomain(head: string): string | undefined {
  const m = /^from:((?:[^\r\n]|\r\n[ \t])*)/im.exec(head);
  if (!m?.[1]) return undefined;
  const value = m[1].replace(/\r\n[ \t]/g, ' ');
  const angle = /<[^<>@]*@([^<>\s]+)>/.exec(value);
  const bare = angle ?? /@([A-Za-z0-9.-]+)/.exec(value);
  return bare?.[1]?.toLowerCase().replace(/\.$/, '');
}
