/**
 * The queue file: one self-describing file per message, never rewritten.
 *
 *   MAILFRAME-QUEUE 1\n
 *   <envelope as one line of JSON>\n
 *   <the message: exactly `size` octets, CRLF line endings, as it will be delivered>
 *
 * It is written under `tmp/`, fsynced, renamed into `messages/` and the
 * directory fsynced (batched, see `group-sync.ts`) before the message counts
 * as queued. A file whose length is not header + `size` is corrupt (it can
 * only come from outside: renames are atomic).
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { EnvelopeAttributes, RecipientAttributes } from '../../core/types.ts';
import type { EnvelopeInput, MessageContent, MessageSource } from '../queue/types.ts';
import { closeFd, commitTmpFile, fsyncFd, openFd, type TmpFilePool, writevAll } from './durable-file.ts';
import type { DirSync } from './group-sync.ts';

export const QUEUE_MAGIC = 'MAILFRAME-QUEUE 1';
const MAGIC_PREFIX = 'MAILFRAME-QUEUE ';
/** The envelope line may not be longer than this (about 4000 recipients with attributes). */
export const MAX_ENVELOPE = 4 * 1024 * 1024;
const WRITE_BATCH = 256 * 1024;

/** The envelope line of a queue file. */
export interface QueueEnvelope {
  readonly id: string;
  readonly from: string;
  readonly recipients: ReadonlyArray<{
    readonly address: string;
    readonly domain: string;
    readonly attributes: RecipientAttributes;
  }>;
  readonly attributes: EnvelopeAttributes;
  /** ISO 8601 arrival time. */
  readonly receivedAt: string;
  /** Octets of the message after the envelope line. */
  readonly size: number;
  readonly source?: MessageSource | undefined;
}

/** 32 random bits per process: ids from two processes sharing a queue never collide. */
const PROCESS_TAG = randomBytes(4).toString('hex');

/**
 * Sortable, unique queue ids: arrival time in base 36, a per-store sequence
 * number (orders ids within one millisecond), then a per-process random tag.
 */
export function newQueueId(now: number, seq: number): string {
  return (
    Math.max(0, Math.floor(now)).toString(36).padStart(9, '0') +
    (seq % 46656).toString(36).padStart(3, '0') +
    PROCESS_TAG
  );
}

const ID = /^[0-9a-z]{8,64}$/;
export function isQueueId(id: string): boolean {
  return ID.test(id);
}

/** The last arrival time formatted, and its text: under load many messages share a millisecond. */
let isoOf = { ms: Number.NaN, text: '' };

function isoTime(ms: number): string {
  if (ms !== isoOf.ms) isoOf = { ms, text: new Date(ms).toISOString() };
  return isoOf.text;
}

export function envelopeFor(id: string, input: EnvelopeInput, size: number): QueueEnvelope {
  return {
    id,
    from: input.from,
    recipients: input.recipients.map((r) => ({
      address: r.address,
      domain: r.domain,
      attributes: r.attributes,
    })),
    attributes: input.attributes,
    receivedAt: isoTime(input.receivedAt),
    size,
    // An absent source stays out of the JSON (stringify skips undefined) without a spread.
    source: input.source,
  };
}

export function headerBytes(envelope: QueueEnvelope): Buffer {
  return Buffer.from(`${QUEUE_MAGIC}\n${JSON.stringify(envelope)}\n`, 'utf8');
}

/** Stream the content after the header into `fd`; resolves with the content's octets. */
async function writeStream(
  fd: number,
  header: Buffer,
  content: Exclude<MessageContent, Buffer>,
): Promise<number> {
  let batch: Buffer[] = [header];
  let batchSize = header.length;
  let written = 0;
  for await (const chunk of content.stream()) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    batch.push(b);
    batchSize += b.length;
    written += b.length;
    if (batchSize >= WRITE_BATCH) {
      await writevAll(fd, batch);
      batch = [];
      batchSize = 0;
    }
  }
  if (batch.length > 0) await writevAll(fd, batch);
  return written;
}

export interface QueueDirs {
  readonly tmp: string;
  readonly messages: string;
}

/** A written queue file. */
export interface WrittenFile {
  readonly path: string;
  readonly envelope: QueueEnvelope;
  readonly bodyOffset: number;
}

/**
 * Write the queue file of `envelope` with the message in memory: one durable
 * writev, no stream (the common case, and moving a message out of the journal).
 */
export async function writeQueueFileFrom(
  dirs: QueueDirs,
  sync: DirSync,
  pool: TmpFilePool,
  envelope: QueueEnvelope,
  body: Buffer,
  fsync: boolean,
): Promise<WrittenFile> {
  const path = join(dirs.messages, envelope.id);
  const header = headerBytes(envelope);
  await commitTmpFile(await pool.take(), path, [header, body], fsync);
  if (fsync) await sync.sync();
  return { path, envelope, bodyOffset: header.length };
}

/**
 * Write the queue file durably: resolves once the file and its directory
 * entry are on disk (when `fsync`).
 */
export async function writeQueueFile(
  dirs: QueueDirs,
  sync: DirSync,
  pool: TmpFilePool,
  id: string,
  input: EnvelopeInput,
  content: MessageContent,
  fsync: boolean,
): Promise<WrittenFile> {
  const path = join(dirs.messages, id);
  if (Buffer.isBuffer(content)) {
    return writeQueueFileFrom(dirs, sync, pool, envelopeFor(id, input, content.length), content, fsync);
  }
  const tmp = join(dirs.tmp, `${id}.msg`);
  let size = content.size;
  // A second pass only if the content's declared size was wrong: the envelope must tell the truth.
  for (let pass = 0; ; pass++) {
    const envelope = envelopeFor(id, input, size);
    const header = headerBytes(envelope);
    const fd = await openFd(tmp, 'wx');
    let written: number;
    try {
      written = await writeStream(fd, header, content);
      if (written === size && fsync) await fsyncFd(fd);
    } catch (err) {
      await closeFd(fd).catch(() => {});
      await unlink(tmp).catch(() => {});
      throw err;
    }
    await closeFd(fd);
    if (written === size) {
      await rename(tmp, path);
      if (fsync) await sync.sync();
      return { path, envelope, bodyOffset: header.length };
    }
    await unlink(tmp);
    if (pass > 0)
      throw new Error(`message stream changed length while being queued (${size} then ${written})`);
    size = written;
  }
}

export type ParsedHeader =
  | { readonly ok: true; readonly envelope: QueueEnvelope; readonly bodyOffset: number }
  | { readonly ok: false; readonly reason: string; readonly unsupported?: boolean };

/** Read and check the magic line and envelope of the queue file at `path`. */
export async function readQueueHeader(path: string, expectedId: string): Promise<ParsedHeader> {
  const fh = await open(path, 'r');
  try {
    const { size: fileSize } = await fh.stat();
    let buf = Buffer.alloc(Math.min(64 * 1024, Math.max(fileSize, 1)));
    let have = (await fh.read(buf, 0, buf.length, 0)).bytesRead;
    let second = -1;
    const first = buf.subarray(0, have).indexOf(10);
    if (first < 0) return { ok: false, reason: 'no magic line' };
    const magic = buf.subarray(0, first).toString('latin1');
    if (magic !== QUEUE_MAGIC) {
      if (magic.startsWith(MAGIC_PREFIX)) {
        return { ok: false, reason: `unsupported format "${magic}"`, unsupported: true };
      }
      return { ok: false, reason: 'not a queue file' };
    }
    for (;;) {
      second = buf.subarray(0, have).indexOf(10, first + 1);
      if (second >= 0 || have >= fileSize || have >= MAX_ENVELOPE) break;
      const bigger = Buffer.alloc(Math.min(buf.length * 4, MAX_ENVELOPE + 64 * 1024));
      buf.copy(bigger, 0, 0, have);
      buf = bigger;
      have += (await fh.read(buf, have, buf.length - have, have)).bytesRead;
    }
    if (second < 0) return { ok: false, reason: 'truncated envelope line' };
    let envelope: QueueEnvelope;
    try {
      envelope = JSON.parse(buf.subarray(first + 1, second).toString('utf8')) as QueueEnvelope;
    } catch {
      return { ok: false, reason: 'envelope is not valid JSON' };
    }
    const problem = checkEnvelope(envelope, expectedId);
    if (problem) return { ok: false, reason: problem };
    const bodyOffset = second + 1;
    if (fileSize !== bodyOffset + envelope.size) {
      return {
        ok: false,
        reason: `length ${fileSize} does not match the envelope (${bodyOffset} + ${envelope.size})`,
      };
    }
    return { ok: true, envelope, bodyOffset };
  } finally {
    await fh.close();
  }
}

/** Why `e` is not a valid envelope for queue id `expectedId`, or undefined when it is. */
export function checkEnvelope(e: QueueEnvelope, expectedId: string): string | undefined {
  if (typeof e !== 'object' || e === null) return 'envelope is not an object';
  if (e.id !== expectedId) return `envelope id "${String(e.id)}" does not match the file name`;
  if (typeof e.from !== 'string') return 'envelope has no sender';
  if (!Array.isArray(e.recipients) || e.recipients.length === 0) return 'envelope has no recipients';
  for (const r of e.recipients) {
    if (typeof r?.address !== 'string' || typeof r.domain !== 'string') return 'bad recipient in envelope';
    if (typeof r.attributes !== 'object' || r.attributes === null) return 'bad recipient attributes';
  }
  if (typeof e.attributes !== 'object' || e.attributes === null) return 'bad envelope attributes';
  if (!Number.isFinite(Date.parse(e.receivedAt))) return 'bad arrival time';
  if (!Number.isInteger(e.size) || e.size < 0) return 'bad size';
  return undefined;
}
