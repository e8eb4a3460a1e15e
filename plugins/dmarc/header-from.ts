/** The RFC5322.From domains of a spooled message, read from its header section only. */
import type { Message } from '../../core/types.ts';

/** The header section (up to the empty line), at most `max` octets; the stream is closed after. */
export async function readHeaderSection(message: Message, max: number): Promise<string> {
  const stream = message.stream();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end >= 0) return text.slice(0, end + 2);
      if (size >= max) return text.slice(0, max);
    }
    return Buffer.concat(chunks).toString('latin1');
  } finally {
    stream.destroy();
  }
}

/** The `From:` fields' unfolded values. */
export function fromFields(header: string): string[] {
  const out: string[] = [];
  for (const field of header.split(/\r\n(?![ \t])/)) {
    const m = /^from[ \t]*:(.*)$/is.exec(field);
    if (m?.[1] !== undefined) out.push(m[1].replace(/\r\n/g, ''));
  }
  return out;
}

/** Author domains of one From value: `<a@b>` forms, else bare `a@b` (lower case). */
export function authorDomains(value: string): string[] {
  const noComments = value.replace(/\([^()]*\)/g, ' ').replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const angle = [...noComments.matchAll(/<[^<>@]*@([^<>\s]+)>/g)].map((m) => m[1] ?? '');
  const found =
    angle.length > 0 ? angle : [...noComments.matchAll(/[^\s,<>:;]+@([^\s,<>;]+)/g)].map((m) => m[1] ?? '');
  return found.map((d) => d.toLowerCase().replace(/\.$/, '')).filter((d) => d !== '');
}
