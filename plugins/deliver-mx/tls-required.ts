/**
 * The `TLS-Required: No` header field (RFC 8689 section 4), read from the
 * queued message at delivery time: only the header section is read, and the
 * stream is dropped as soon as it ends, so the body is never buffered.
 */
import type { Readable } from 'node:stream';

/** Header sections longer than this are not searched further. */
const MAX_HEADER_OCTETS = 256 * 1024;

/** Whether the message's header section has `TLS-Required: No`. A read error counts as no. */
export async function tlsRequiredNo(stream: Readable): Promise<boolean> {
  let head = '';
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      head += chunk.toString('latin1');
      const end = headerEnd(head);
      if (end >= 0) {
        head = head.slice(0, end);
        break;
      }
      if (head.length > MAX_HEADER_OCTETS) break;
    }
  } catch {
    return false;
  } finally {
    stream.destroy();
  }
  const unfolded = head.replace(/\r?\n[ \t]/g, ' ');
  return unfolded.split(/\r?\n/).some((line) => /^tls-required[ \t]*:[ \t]*no[ \t]*$/i.test(line));
}

function headerEnd(text: string): number {
  if (text.startsWith('\r\n') || text.startsWith('\n')) return 0;
  const crlf = text.indexOf('\r\n\r\n');
  const lf = text.indexOf('\n\n');
  if (crlf < 0) return lf;
  if (lf < 0) return crlf;
  return Math.min(crlf, lf);
}
