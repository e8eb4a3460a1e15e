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
 * flight, for the cost of one write. (Two writes under way at once, each at
 * its own offset and acknowledged in file order, were tried: ext4 completes
 * more writes per second that way, but each carries fewer records and the
 * server spends more CPU per message; W1 durable was 5 to 8 % slower, and
 * about 15 % slower once the segments were zero-filled. A writer thread of
 * its own, taking records from a shared ring and writing them back to back,
 * was tried too: a transaction's wait fell only 0.435 -> 0.42 ms, since what
 * it waits for is mostly the hop back to the busy main thread; bench/README.)
 * With `sync` the segment is zero-filled ahead of its appends
 * (`ZERO_AHEAD`), so an append changes no size or extent and the file system
 * flushes the data without a journal commit of its own; recovery takes zeros
 * to the end as the segment's clean end.
 *
 * A message leaves the journal with a release record (delivered, bounced,
 * deleted, or moved to a queue file of its own when it is deferred or held:
 * the store does that, the journal only holds fresh mail). A release appended
 * for a delivered message is not waited for: if a crash loses it, the message
 * is delivered again, within the queue's at-least-once promise. Such a
 * record starts no write of its own: it rides with the next write a waiting
 * record starts, or goes out after `LAZY_FLUSH_MS` when none comes (under
 * load a third of the writes used to carry nothing but releases, each taking
 * the disk's flush away from the transactions waiting for theirs).
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
import { type JournalEntry, releaseRecord, scanRecords, ZEROS } from './journal-record.ts';
import type { QueueEnvelope } from './queue-file.ts';

const { O_WRONLY, O_CREAT, O_EXCL, O_DSYNC } = constants;

export const DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024;
/** Segments kept before the oldest one's remaining messages are moved to files. */
const MAX_SEGMENTS = 4;
const NAME = /^(\d{12})\.jnl$/;
/** How long a record nobody waits for may sit before it is written on its own. */
export const LAZY_FLUSH_MS = 100;
/** Octets of zeros written ahead of the appends at a time (with `sync`). */
export const ZERO_AHEAD = ZEROS.length;

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
  /** `fd` is open: writes may start. */
  ready = false;
  /** Records not yet handed to a write. */
  pending: Buffer[] = [];
  /** The waiters of `pending`. */
  waiters: Waiter[] = [];
  /** A write is under way. */
  writing = false;
  /** Told when the segment goes idle (`close` waits for it). */
  idleWaiters: Array<() => void> = [];
  failure: unknown;
  /** Set while records nobody waits for are pending. */
  lazyTimer: NodeJS.Timeout | undefined;
  /** Octets from the start known to be zero-filled on disk (appends below it change no size). */
  zeroedEnd = 0;
  /** Where the zero-fill under way starts; no append may reach it before it is done. */
  zeroingFrom: number | undefined;

  constructor(seq: number, path: string, size: number, sealed: boolean) {
    this.seq = seq;
    this.path = path;
    this.size = size;
    this.sealed = sealed;
  }

  get idle(): boolean {
    return !this.writing && this.pending.length === 0 && this.zeroingFrom === undefined;
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
    s.opened.then(
      () => {
        s.ready = true;
        this.#zeroAhead(s);
        this.#pump(s, true);
      },
      // A failure shows through the appends that wait for it.
      (err: unknown) => this.#fail(s, err),
    );
    this.#segments.push(s);
    return s;
  }

  /**
   * Queue `buffers` for `segment`. With `wait`, the promise resolves once they
   * are written (durably with `sync`) along with everything before them;
   * without, they go out with the next write a waiting record starts, or
   * after `LAZY_FLUSH_MS` (a failure is logged).
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
    this.#pump(segment, false);
    return done;
  }

  /**
   * Start a write unless one is under way, when a record waits for it (or
   * `force`: the lazy timer, the file just opened, closing). Records nobody
   * waits for arm the lazy timer instead.
   */
  #pump(s: Segment, force: boolean): void {
    if (!s.ready || s.failure !== undefined || s.writing || s.pending.length === 0) return;
    // Records that would reach the zeros being written wait for them (the fill calls back).
    if (s.zeroingFrom !== undefined && s.size > s.zeroingFrom) return;
    if (force || this.#closed || s.waiters.length > 0) {
      const buffers = s.pending;
      const waiters = s.waiters;
      s.pending = [];
      s.waiters = [];
      s.writing = true;
      this.counters.writes++;
      writevAll(s.fd, buffers).then(
        () => {
          s.writing = false;
          for (const w of waiters) w.resolve();
          this.#zeroAhead(s);
          this.#pump(s, false);
          this.#settled(s);
        },
        (err: unknown) => {
          s.writing = false;
          for (const w of waiters) w.reject(err);
          this.#fail(s, err);
        },
      );
      return;
    }
    s.lazyTimer ??= setTimeout(() => {
      s.lazyTimer = undefined;
      this.#pump(s, true);
    }, LAZY_FLUSH_MS).unref();
  }

  /**
   * With `sync`, keep at least `ZERO_AHEAD` octets of zeros written and durable
   * ahead of the appends. An `O_DSYNC` append that grows the file (or fills a
   * fresh extent) makes ext4 commit its journal too; over zeros already on
   * disk only the data goes: 0.14 against 0.19 ms per write measured here,
   * and no wake-up of ext4's journal thread. The fill never starts below what
   * has been appended, so it cannot overwrite a record.
   */
  #zeroAhead(s: Segment): void {
    if (!this.#o.sync || s.sealed || s.failure !== undefined || s.zeroingFrom !== undefined) return;
    if (s.size + ZERO_AHEAD <= s.zeroedEnd) return;
    const from = Math.max(s.zeroedEnd, s.size);
    const to = Math.min(this.#segmentSize, from + ZERO_AHEAD);
    if (to <= from) return;
    s.zeroingFrom = from;
    writevAll(s.fd, [ZEROS.subarray(0, to - from)], from).then(
      () => {
        s.zeroingFrom = undefined;
        s.zeroedEnd = to;
        this.#pump(s, false);
        this.#settled(s);
      },
      (err: unknown) => {
        s.zeroingFrom = undefined;
        this.#fail(s, err);
      },
    );
  }

  /** A write failed: where the file ends is unknown now, so no more appends here, and what waits fails. */
  #fail(s: Segment, err: unknown): void {
    if (s.failure === undefined) {
      s.failure = err;
      s.sealed = true;
      this.#o.log.error({ err, file: s.path }, 'queue journal write failed; starting a new segment');
    }
    for (const w of s.waiters.splice(0)) w.reject(err);
    s.pending = [];
    this.#settled(s);
  }

  #settled(s: Segment): void {
    if (!s.idle) return;
    clearTimeout(s.lazyTimer);
    s.lazyTimer = undefined;
    for (const notify of s.idleWaiters.splice(0)) notify();
    this.sweep();
  }

  #whenIdle(s: Segment): Promise<void> {
    if (s.idle) return Promise.resolve();
    return new Promise((resolve) => s.idleWaiters.push(resolve));
  }

  /** Wait for writes in progress, close the files; segments with nothing live are deleted. */
  async close(): Promise<void> {
    this.#closed = true;
    const last = this.#segments.at(-1);
    if (last) last.sealed = true;
    for (const s of this.#segments) this.#pump(s, true);
    await Promise.all(this.#segments.map((s) => this.#whenIdle(s)));
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
