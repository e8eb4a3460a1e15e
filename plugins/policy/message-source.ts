/**
 * How checks read a message: a small one (the spool keeps it in memory
 * anyway) as one buffer, a large one as a stream from the spool, so that no
 * check holds a large message in memory and none pays a stream's overhead for
 * a small one.
 */
import type { Readable } from 'node:stream';
import type { Message } from '../../core/types.ts';
import { readHeaderSection } from '../queue/message-read.ts';

/** Messages up to this many octets (without prepended fields) are read as one buffer. */
export const SMALL_MESSAGE = 64 * 1024;
/** Room for the prepended fields on top of a small message. */
export const PREPENDED_ROOM = 1024 * 1024;

/** The whole message as one buffer when it is small, else a stream (prepended fields first either way). */
export async function messageSource(message: Message): Promise<Buffer | Readable> {
  if (message.size > SMALL_MESSAGE) return message.stream();
  try {
    return await message.read(SMALL_MESSAGE + PREPENDED_ROOM);
  } catch {
    return message.stream();
  }
}

/** The header section (fields with their CRLF, without the empty line), at most `cap` octets, cut at a line end. */
export async function headerSection(message: Message, cap: number): Promise<Buffer> {
  const source = await messageSource(message);
  if (!Buffer.isBuffer(source)) return readHeaderSection(source, cap);
  if (source.length >= 2 && source[0] === 13 && source[1] === 10) return Buffer.alloc(0);
  const end = source.indexOf('\r\n\r\n');
  const head = end < 0 ? source : source.subarray(0, end + 2);
  if (head.length <= cap) return head;
  const cut = head.subarray(0, cap);
  const eol = cut.lastIndexOf('\r\n');
  return eol < 0 ? cut : cut.subarray(0, eol + 2);
}
