/**
 * Records of the queue journal (see `journal.ts`). Each record is framed so a
 * reader can tell a whole record from a torn or damaged one:
 *
 *   offset  0  "MFJ1"              4 octets, the format marker
 *           4  type                1 octet: 1 message, 2 release
 *           5  0 0 0               reserved
 *           8  payload length      unsigned 32-bit, big-endian
 *          12  CRC-32 of payload   unsigned 32-bit, big-endian
 *          16  payload
 *
 * A message record's payload is the queue file's envelope line (the same JSON
 * as `messages/ID`, see `queue-file.ts`), a newline, then the message octets.
 * A release record's payload is a queue id in ASCII: from then on that
 * message is no longer the journal's (delivered, bounced, deleted, or moved
 * to a queue file of its own).
 */
import { crc32 } from 'node:zlib';
import { checkEnvelope, isQueueId, type QueueEnvelope } from './queue-file.ts';

export const RECORD_MAGIC = 0x4d464a31; // "MFJ1"
export const RECORD_HEADER = 16;
export const RecordType = { message: 1, release: 2 } as const;
/** Larger payloads cannot come from this writer (messages over 256 KiB get files of their own). */
export const MAX_PAYLOAD = 64 * 1024 * 1024;

function frame(type: number, payload: readonly Buffer[]): Buffer[] {
  let length = 0;
  let crc = 0;
  for (const p of payload) {
    length += p.length;
    crc = crc32(p, crc);
  }
  const header = Buffer.allocUnsafe(RECORD_HEADER);
  header.writeUInt32BE(RECORD_MAGIC, 0);
  header.writeUInt32BE(type << 24, 4);
  header.writeUInt32BE(length, 8);
  header.writeUInt32BE(crc, 12);
  return [header, ...payload];
}

/** A message record; `bodyOffset` is where the message starts, from the record's start. */
export function messageRecord(
  envelope: QueueEnvelope,
  body: Buffer,
): { buffers: Buffer[]; bodyOffset: number } {
  const line = Buffer.from(`${JSON.stringify(envelope)}\n`, 'utf8');
  return { buffers: frame(RecordType.message, [line, body]), bodyOffset: RECORD_HEADER + line.length };
}

export function releaseRecord(id: string): Buffer[] {
  return frame(RecordType.release, [Buffer.from(id, 'latin1')]);
}

export type JournalEntry =
  | {
      readonly type: 'message';
      readonly envelope: QueueEnvelope;
      /** Offsets of the message octets in the scanned buffer: [bodyStart, bodyEnd). */
      readonly bodyStart: number;
      readonly bodyEnd: number;
    }
  | { readonly type: 'release'; readonly id: string };

export interface ScanResult {
  readonly entries: JournalEntry[];
  /** Where the whole records end; less than the buffer's length when the rest is not a record. */
  readonly validEnd: number;
  /** Why scanning stopped before the end. */
  readonly problem?: string;
}

/** Zeros, for filling a segment ahead of its appends and for recognising its zero-filled end. */
export const ZEROS = Buffer.alloc(1024 * 1024);

function isZero(buf: Buffer): boolean {
  for (let at = 0; at < buf.length; at += ZEROS.length) {
    const part = buf.subarray(at, at + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

/** Read the records of a journal segment, stopping at the first that is not whole and intact. */
export function scanRecords(buf: Buffer): ScanResult {
  const entries: JournalEntry[] = [];
  let at = 0;
  const stop = (problem: string): ScanResult => ({ entries, validEnd: at, problem });
  while (at < buf.length) {
    // The journal zero-fills a segment ahead of its appends: zeros to the end are its clean end.
    if (buf[at] === 0 && isZero(buf.subarray(at))) break;
    if (buf.length - at < RECORD_HEADER) return stop('truncated record header');
    if (buf.readUInt32BE(at) !== RECORD_MAGIC) return stop('no record marker');
    if ((buf.readUInt32BE(at + 4) & 0xffffff) !== 0) return stop('bad record header');
    const type = buf[at + 4];
    const length = buf.readUInt32BE(at + 8);
    const start = at + RECORD_HEADER;
    if (length > MAX_PAYLOAD || start + length > buf.length) return stop('truncated record');
    const payload = buf.subarray(start, start + length);
    if (crc32(payload) !== buf.readUInt32BE(at + 12)) return stop('checksum mismatch');
    if (type === RecordType.release) {
      entries.push({ type: 'release', id: payload.toString('latin1') });
    } else if (type === RecordType.message) {
      const nl = payload.indexOf(10);
      if (nl < 0) return stop('message record without an envelope line');
      let envelope: QueueEnvelope;
      try {
        envelope = JSON.parse(payload.subarray(0, nl).toString('utf8')) as QueueEnvelope;
      } catch {
        return stop('envelope is not valid JSON');
      }
      const id = typeof envelope?.id === 'string' && isQueueId(envelope.id) ? envelope.id : '';
      const problem = id ? checkEnvelope(envelope, id) : 'bad queue id';
      if (problem) return stop(problem);
      const bodyStart = start + nl + 1;
      if (start + length - bodyStart !== envelope.size)
        return stop('message length does not match its envelope');
      entries.push({ type: 'message', envelope, bodyStart, bodyEnd: start + length });
    } else {
      return stop(`unknown record type ${type}`);
    }
    at = start + length;
  }
  return { entries, validEnd: at };
}
