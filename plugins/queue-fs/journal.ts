/**
 * The queue journal: where queue-fs puts messages of up to 256 KiB on
 * arrival, so that many concurrent transactions share one durable write.
 *
 *   <root>/journal/000000000001.jnl   segments, append-only, never rewritten
 *
 * Records (`journal-record.ts`) are appended to the newest segment, opened
 * `O_DSYNC`: a write returns once its data (and the file's length) are on
 * disk. **Group commit**: while one write is on its way, the records of every
 * transaction that arrives meanwhile gather, and go out together in the next
 * `writev` when it returns; each waits for the write that carries its record.
 * Under load a batch carries as many records as there were transactions in
 * flight, for the cost of one write.
 *
 * A message leaves the journal with a release record (delivered, bounced,
 * deleted, or moved to a queue file of its own when it is deferred or held:
 * the store does that, the journal only holds fresh mail). A release appended
 * for a delivered message is not waited for: if a crash loses it, the message
 * is delivered again, within the queue's at-least-once promise.
 *
 * Segments are deleted oldest first, each once it and every older segment
 * hold no live message: a release record only ever names a message of its own
 * or an older segment, so deleting in order never brings a released message
 * back. A segment rolls over at `segmentSize` octets; when more than
 * `MAX_SEGMENTS` accumulate because an old one still holds a message, the
 * store is asked to move that segment's messages to files (`onCompact`).
 */

import { constants } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../core/types.ts';
import { closeFd, openFd, writevAll } from './durable-file.ts';
import { DirSync } from './group-sync.ts';
import { type JournalEntry, releaseRecord, scanRecords } from './journal-record.ts';
import type { QueueEnvelope } from './queue-file.ts';

const { O_WRONLY, O_CREAT, O_EXCL, O_DSYNC } = constants;

export const DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024;
/** Segments kept before the oldest one's remaining messages are moved to files. */
const MAX_SEGMENTS = 4;
const NAME = /^(\d{12})\.jnl$/;

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

/** One segment file. */
export class Segment {
  readonly seq: number;
  readonly path: string;
  /** Messages of this segment not yet released. */
  live = 0;
  /** Octets appended (written or on their way). */
  size: number;
  /** No more appends (full, broken, or found at start). */
  sealed: boolean;
  fd = -1;
  /** Resolves once the file exists durably and is open for appends. */
  opened: Promise<void> = Promise.resolve();
  pending: Buffer[] = [];
  waiters: Waiter[] = [];
  writing = false;
  /** The write loop running now (resolves when nothing is left to write). */
  flushing: Promise<void> = Promise.resolve();
  failure: unknown;

  constructor(seq: number, path: string, size: number, sealed: boolean) {
    this.seq = seq;
    this.path = path;
    this.size = size;
    this.sealed = sealed;
  }

  get idle(): boolean {
    return !this.writing && this.pending.length === 0;
  }
}

/** Where a journaled message's octets are: `[bodyStart, bodyEnd)` of `segment.path`. */
export interface JournalSlot {
  readonly segment: Segment;
  readonly bodyStart: number;
  readonly bodyEnd: number;
}

export interface RecoveredMessage {
  readonly envelope: QueueEnvelope;
  readonly slot: JournalSlot;
}

export interface JournalOptions {
  readonly dir: string;
  /** Directory for copies of damaged segments. */
  readonly corruptDir: string;
  /** `O_DSYNC` appends and a directory fsync per new segment. */
  readonly sync: boolean;
  readonly segmentSize?: number;
  readonly log: Logger;
  /** Move the live messages of `segment` out of the journal (it blocks deletion of newer ones). */
  readonly onCompact?: (segment: Segment) => void;
}

function segmentName(seq: number): string {
  return `${String(seq).padStart(12, '0')}.jnl`;
}

export class Journal {
  readonly dir: string;
  readonly #o: JournalOptions;
  readonly #segmentSize: number;
  readonly #dirSync: DirSync;
  /** Oldest first; the last one takes appends unless sealed. */
  readonly #segments: Segment[] = [];
  readonly #unlinks = new Set<Promise<void>>();
  #nextSeq = 1;
  #closed = false;
  /** Segments handed to `onCompact` (each once). */
  readonly #compacted = new WeakSet<Segment>();
  readonly counters = { writes: 0, records: 0 };

  private constructor(o: JournalOptions) {
    this.dir = o.dir;
    this.#o = o;
    this.#segmentSize = o.segmentSize ?? DEFAULT_SEGMENT_SIZE;
    this.#dirSync = new DirSync(o.dir);
  }

  /**
   * Open the journal directory and read the segments a previous run left:
   * every message in them not released is returned (and counted live).
   * Segments with nothing live are deleted once the caller calls `sweep`.
   */
  static async open(o: JournalOptions): Promise<{ journal: Journal; recovered: RecoveredMessage[] }> {
    const journal = new Journal(o);
    await mkdir(o.dir, { recursive: true, mode: 0o700 });
    const found: Array<{ seq: number; name: string }> = [];
    for (const name of await readdir(o.dir)) {
      const m = NAME.exec(name);
      if (m) found.push({ seq: Number(m[1]), name });
      else o.log.warn({ file: join(o.dir, name) }, 'ignoring a file in the queue journal directory');
    }
    found.sort((a, b) => a.seq - b.seq);
    const live = new Map<string, RecoveredMessage>();
    for (const { seq, name } of found) {
      const path = join(o.dir, name);
      const buf = await readFile(path);
      const scan = scanRecords(buf);
      const segment = new Segment(seq, path, buf.length, true);
      journal.#segments.push(segment);
      journal.#nextSeq = seq + 1;
      if (scan.problem) {
        const copy = join(o.corruptDir, `${name}.${Date.now().toString(36)}`);
        await copyFile(path, copy).catch(() => {});
        o.log.error(
          { file: path, copy, problem: scan.problem, at: scan.validEnd, ignored: buf.length - scan.validEnd },
          'queue journal segment damaged: records from the damaged one on are ignored (a copy is in corrupt/)',
        );
      }
      for (const e of scan.entries) journal.#recover(live, segment, e);
    }
    return { journal, recovered: [...live.values()] };
  }

  #recover(live: Map<string, RecoveredMessage>, segment: Segment, e: JournalEntry): void {
    if (e.type === 'release') {
      const m = live.get(e.id);
      if (m) {
        live.delete(e.id);
        m.slot.segment.live--;
      }
      return;
    }
    if (live.has(e.envelope.id)) return;
    segment.live++;
    live.set(e.envelope.id, {
      envelope: e.envelope,
      slot: { segment, bodyStart: e.bodyStart, bodyEnd: e.bodyEnd },
    });
  }

  /** Append a record; `bodyOffset` is where the message starts within it. */
  append(
    buffers: readonly Buffer[],
    bodyOffset: number,
    length: number,
  ): { slot: JournalSlot; durable: Promise<void> } {
    if (this.#closed) throw new Error('the queue journal is closed');
    let total = 0;
    for (const b of buffers) total += b.length;
    const segment = this.#current(total);
    const start = segment.size;
    segment.live++;
    const durable = this.#write(segment, buffers, true);
    return {
      slot: { segment, bodyStart: start + bodyOffset, bodyEnd: start + bodyOffset + length },
      durable,
    };
  }

  /**
   * The message in `slot` leaves the journal. `durable`: resolve once the
   * release record is on disk; otherwise it goes out with the next write and
   * a failure is only logged.
   */
  release(id: string, slot: JournalSlot, durable: boolean): Promise<void> {
    const written = this.#closed ? undefined : this.#write(this.#current(0), releaseRecord(id), durable);
    this.forget(slot);
    return written ?? Promise.resolve();
  }

  /** Stop counting the message in `slot` as live, without a record (it has a queue file that wins). */
  forget(slot: JournalSlot): void {
    slot.segment.live--;
    this.sweep();
  }

  /** Delete the oldest segments with nothing live. */
  sweep(): void {
    for (;;) {
      const s = this.#segments[0];
      if (!s || s.live > 0 || !s.sealed || !s.idle) break;
      this.#segments.shift();
      const gone: Promise<void> = (async () => {
        await s.opened.catch(() => {});
        if (s.fd >= 0) await closeFd(s.fd).catch(() => {});
        s.fd = -1;
        await unlink(s.path).catch((err) => {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
            this.#o.log.error({ err, file: s.path }, 'cannot delete a queue journal segment');
        });
      })().finally(() => this.#unlinks.delete(gone));
      this.#unlinks.add(gone);
    }
    if (this.#segments.length > MAX_SEGMENTS) {
      const oldest = this.#segments[0];
      if (oldest && oldest.live > 0 && !this.#compacted.has(oldest)) {
        this.#compacted.add(oldest);
        this.#o.onCompact?.(oldest);
      }
    }
  }

  /** The segment taking appends, rolling over when `incoming` octets would overfill it. */
  #current(incoming: number): Segment {
    let s = this.#segments.at(-1);
    if (s && !s.sealed && (s.size === 0 || s.size + incoming <= this.#segmentSize)) return s;
    if (s) s.sealed = true;
    s = this.#create();
    this.sweep();
    return s;
  }

  #create(): Segment {
    const seq = this.#nextSeq++;
    const s = new Segment(seq, join(this.dir, segmentName(seq)), 0, false);
    const flags = O_WRONLY | O_CREAT | O_EXCL | (this.#o.sync ? O_DSYNC : 0);
    s.opened = (async () => {
      s.fd = await openFd(s.path, flags);
      if (this.#o.sync) await this.#dirSync.sync();
    })();
    // A failure shows through the appends that wait for it.
    s.opened.catch(() => {});
    this.#segments.push(s);
    return s;
  }

  /**
   * Queue `buffers` for `segment`. With `wait`, the promise resolves once they
   * are written (durably with `sync`); without, they just go out with the
   * next write (a failure is logged by the write loop).
   */
  #write(segment: Segment, buffers: readonly Buffer[], wait: true): Promise<void>;
  #write(segment: Segment, buffers: readonly Buffer[], wait: boolean): Promise<void> | undefined;
  #write(segment: Segment, buffers: readonly Buffer[], wait: boolean): Promise<void> | undefined {
    const done = wait
      ? new Promise<void>((resolve, reject) => {
          segment.waiters.push({ resolve, reject });
        })
      : undefined;
    for (const b of buffers) {
      segment.pending.push(b);
      segment.size += b.length;
    }
    this.counters.records++;
    if (!segment.writing) segment.flushing = this.#flush(segment);
    return done;
  }

  async #flush(s: Segment): Promise<void> {
    s.writing = true;
    try {
      await s.opened;
      while (s.pending.length > 0) {
        const buffers = s.pending;
        const waiters = s.waiters;
        s.pending = [];
        s.waiters = [];
        this.counters.writes++;
        try {
          await writevAll(s.fd, buffers);
        } catch (err) {
          for (const w of waiters) w.reject(err);
          throw err;
        }
        for (const w of waiters) w.resolve();
      }
    } catch (err) {
      // Where the file ends is unknown now: no more appends here; what waits fails.
      s.failure = err;
      s.sealed = true;
      for (const w of s.waiters.splice(0)) w.reject(err);
      s.pending = [];
      this.#o.log.error({ err, file: s.path }, 'queue journal write failed; starting a new segment');
    } finally {
      s.writing = false;
      this.sweep();
    }
  }

  /** Wait for writes in progress, close the files; segments with nothing live are deleted. */
  async close(): Promise<void> {
    this.#closed = true;
    const last = this.#segments.at(-1);
    if (last) last.sealed = true;
    await Promise.all(this.#segments.map((s) => s.flushing));
    this.sweep();
    await Promise.all([...this.#unlinks]);
    for (const s of this.#segments) {
      await s.opened.catch(() => {});
      if (s.fd >= 0) await closeFd(s.fd).catch(() => {});
      s.fd = -1;
    }
    await this.#dirSync.close();
  }
}
