/** Helpers for looking at captured messages. */
import type { CapturedMessage } from '../../core/testkit.ts';

/**
 * Offset just past the first header field (the core's Received, possibly
 * folded): the first CRLF not followed by a space or tab.
 */
function endOfFirstField(data: Buffer): number {
  let pos = 0;
  for (;;) {
    const crlf = data.indexOf('\r\n', pos);
    if (crlf < 0) throw new Error('message has no complete first header field');
    const next = data[crlf + 2];
    if (next !== 0x20 && next !== 0x09) return crlf + 2;
    pos = crlf + 2;
  }
}

/** The message bytes after the prepended Received header field: what the client sent, unstuffed. */
export function afterReceived(m: CapturedMessage): Buffer {
  if (!m.data.subarray(0, 9).equals(Buffer.from('Received:'))) {
    throw new Error(`message does not start with Received: ${JSON.stringify(m.text.slice(0, 40))}`);
  }
  return m.data.subarray(endOfFirstField(m.data));
}
