/**
 * The message on its way out: one pass to learn its size and whether it is
 * 8-bit (RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8 decisions), then
 * the bytes as DATA (dot-stuffed, RFC 5321 4.5.2) or as BDAT chunks (RFC 3030,
 * sent as they are).
 */
import type { Readable } from 'node:stream';
import { DotStuffer } from '../../core/codec/dot-stuff.ts';

export interface MessageFacts {
  /** Octets of the message (RFC 1870: before dot-stuffing). */
  readonly size: number;
  /** Some octet has the high bit set. */
  readonly eightBit: boolean;
  /** Some octet of the header section (up to the first empty line) has the high bit set. */
  readonly eightBitHeaders: boolean;
}

/** Read the message once and describe it. */
export async function scanMessage(stream: Readable): Promise<MessageFacts> {
  let size = 0;
  let eightBit = false;
  let eightBitHeaders = false;
  let inHeaders = true;
  // Last two octets seen, to find CRLF CRLF (or LF LF) across chunk boundaries;
  // the message starts as if after a line ending.
  let prev1 = 0x0a;
  let prev2 = 0x0d;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (inHeaders) {
      for (let i = 0; i < chunk.length; i++) {
        const b = chunk[i] as number;
        if (b >= 0x80) {
          eightBit = true;
          eightBitHeaders = true;
        } else if (b === 0x0a && (prev1 === 0x0a || (prev1 === 0x0d && prev2 === 0x0a))) {
          inHeaders = false;
          if (!eightBit) eightBit = hasHighBit(chunk, i + 1);
          break;
        }
        prev2 = prev1;
        prev1 = b;
      }
    } else if (!eightBit) {
      eightBit = hasHighBit(chunk, 0);
    }
  }
  return { size, eightBit, eightBitHeaders };
}

function hasHighBit(chunk: Buffer, from: number): boolean {
  for (let i = from; i < chunk.length; i++) if ((chunk[i] as number) >= 0x80) return true;
  return false;
}

/** DATA payload: each piece of the message dot-stuffed, then the terminator (`.CRLF`) as the last group. */
export async function* dotStuffed(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer[]> {
  const stuffer = new DotStuffer();
  for await (const chunk of source) {
    const pieces = stuffer.write(chunk);
    if (pieces.length > 0) yield pieces;
  }
  yield [stuffer.end()];
}

/** BDAT payload: the message in chunks of exactly `size` octets, the last one shorter (or empty) and flagged. */
export async function* chunks(
  source: AsyncIterable<Buffer>,
  size: number,
): AsyncGenerator<{ data: Buffer; last: boolean }> {
  let held: Buffer[] = [];
  let heldBytes = 0;
  for await (const chunk of source) {
    held.push(chunk);
    heldBytes += chunk.length;
    // Only cut when more follows the cut, so that the last chunk is known.
    while (heldBytes > size) {
      const all = held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held, heldBytes);
      yield { data: all.subarray(0, size), last: false };
      held = [all.subarray(size)];
      heldBytes -= size;
    }
  }
  yield { data: Buffer.concat(held, heldBytes), last: true };
}
