/**
 * A message's header section parsed once and shared by the checks that read
 * it (DKIM verification, DMARC's From, ARC's look for ARC sets,
 * Authentication-Results' look for forged fields): `messageHeader(tx,
 * message)` reads a small message (see `message-source.ts`) as one buffer,
 * splits its header section into fields, and keeps the result on the
 * transaction for the next check, for as long as the message stays as it was
 * (a `prepend` or a `removeFields` makes the next call parse it again).
 */
import type { Message, Transaction } from '../../core/types.ts';
import { PREPENDED_ROOM, SMALL_MESSAGE } from './message-source.ts';

/** One header field as it stands in the message. */
export interface ParsedField {
  /** The name: WSP around it removed, ASCII letters in lower case (non-ASCII octets as they are). */
  readonly name: string;
  /** The whole field as latin1 text (one char per octet): folded lines joined by CRLF, no final CRLF. */
  readonly raw: string;
  /** Offset in the header section just past the field's final CRLF. */
  readonly end: number;
}

/** A small message with its header section parsed. */
export interface MessageHeader {
  /** The whole message (prepended fields first), as `Message.read` gives it. */
  readonly buffer: Buffer;
  /** The header section as latin1 text: the fields with their CRLF, without the empty line. */
  readonly text: string;
  /** Where the body starts in `buffer` (past the empty line; `buffer.length` when there is none). */
  readonly bodyStart: number;
  /** The fields, top first (fields of which no name can be read, without a colon, left out). */
  readonly fields: readonly ParsedField[];
}

interface CachedHeader {
  readonly message: Message;
  readonly prepended: Message['prepended'];
  readonly size: number;
  readonly header: MessageHeader;
}

declare module '../../core/types.ts' {
  interface TransactionNotes {
    /** The message's parsed header section (`messageHeader`), while the message is unchanged. */
    messageHeader?: CachedHeader;
  }
}

const SP = 32;
const HTAB = 9;

/**
 * A field name as DKIM canonicalisation and `h=` compare it: WSP around it
 * removed, ASCII letters in lower case (`toLowerCase` would also change
 * octets above 127 read as latin1).
 */
export function fieldName(text: string): string {
  let upper = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 65 && c <= 90) upper = true;
    else if (c > 127) return slowFieldName(text);
  }
  const first = text.charCodeAt(0);
  const last = text.charCodeAt(text.length - 1);
  if (first === SP || first === HTAB || last === SP || last === HTAB) return slowFieldName(text);
  return upper ? text.toLowerCase() : text;
}

const WSP_EDGES = /^[ \t]+|[ \t]+$/g;

function slowFieldName(text: string): string {
  return text.replace(WSP_EDGES, '').replace(/[A-Z]+/g, (s) => s.toLowerCase());
}

/**
 * The fields of a header section (latin1 text, fields with their CRLF): a
 * field ends at a CRLF not followed by WSP. Pieces without a colon (or with
 * nothing before it) are left out.
 */
export function parseHeaderFields(section: string): ParsedField[] {
  const out: ParsedField[] = [];
  const text = section.endsWith('\r\n') ? section.slice(0, -2) : section;
  let start = 0;
  for (let i = text.indexOf('\r\n'); ; i = text.indexOf('\r\n', i + 2)) {
    if (i >= 0) {
      const next = text.charCodeAt(i + 2);
      if (next === SP || next === HTAB) continue;
    }
    const stop = i < 0 ? text.length : i;
    const raw = text.slice(start, stop);
    const colon = raw.indexOf(':');
    if (colon > 0) out.push({ name: fieldName(raw.slice(0, colon)), raw, end: stop + 2 });
    if (i < 0) break;
    start = i + 2;
  }
  return out;
}

/** `buffer` (a whole message) with its header section parsed. */
export function parseMessageHeader(buffer: Buffer): MessageHeader {
  // A message without header fields starts with the empty line.
  const empty = buffer.length >= 2 && buffer[0] === 13 && buffer[1] === 10;
  if (empty) return { buffer, text: '', bodyStart: 2, fields: [] };
  const end = buffer.indexOf('\r\n\r\n');
  // All header section, no empty line: the body is empty.
  if (end < 0) {
    const text = buffer.toString('latin1');
    return { buffer, text, bodyStart: buffer.length, fields: parseHeaderFields(text) };
  }
  const text = buffer.toString('latin1', 0, end + 2);
  return { buffer, text, bodyStart: end + 4, fields: parseHeaderFields(text) };
}

/** The header parsed by an earlier `messageHeader` call, if the message has not changed since. */
export function cachedMessageHeader(tx: Transaction, message: Message): MessageHeader | undefined {
  const c = tx.notes.messageHeader;
  return c !== undefined &&
    c.message === message &&
    c.prepended === message.prepended &&
    c.size === message.size
    ? c.header
    : undefined;
}

/**
 * The message with its header section parsed, kept on the transaction for
 * the checks after this one; undefined for a large message (read it as a
 * stream: `messageSource`) or one that cannot be read in one piece.
 */
export async function messageHeader(tx: Transaction, message: Message): Promise<MessageHeader | undefined> {
  return messageHeaderNow(tx, message);
}

/**
 * The same as `messageHeader`, without a promise when it can be had at once:
 * parsed already, or the message is held in memory (it did not spill to disk).
 */
export function messageHeaderNow(
  tx: Transaction,
  message: Message,
): MessageHeader | undefined | Promise<MessageHeader | undefined> {
  const cached = cachedMessageHeader(tx, message);
  if (cached !== undefined) return cached;
  if (message.size > SMALL_MESSAGE) return undefined;
  const { prepended, size } = message;
  const now = message.readNow(SMALL_MESSAGE + PREPENDED_ROOM);
  if (now !== undefined) return keep(tx, message, prepended, size, now);
  return message.read(SMALL_MESSAGE + PREPENDED_ROOM).then(
    (buffer) => keep(tx, message, prepended, size, buffer),
    () => undefined,
  );
}

/** `buffer` parsed, and kept on the transaction if nothing changed the message while it was read. */
function keep(
  tx: Transaction,
  message: Message,
  prepended: Message['prepended'],
  size: number,
  buffer: Buffer,
): MessageHeader {
  const header = parseMessageHeader(buffer);
  if (message.prepended === prepended && message.size === size)
    tx.notes.messageHeader = { message, prepended, size, header };
  return header;
}
