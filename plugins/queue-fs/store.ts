/**
 * The file-system queue store. On disk (see docs/plugins/queue-fs.md):
 *
 *   <root>/journal/        fresh messages of up to 256 KiB, many per durable write (`journal.ts`)
 *   <root>/messages/<id>   queue files (envelope + message), written once: large messages,
 *                          and journaled ones once they are deferred or held
 *   <root>/state/<id>      per-recipient state sidecars, replaced atomically
 *   <root>/tmp/            writes in progress, a few empty files opened ahead; emptied at start
 *   <root>/corrupt/        files that failed their checks at start
 *
 * In memory it keeps every message's envelope and state, a due index of jobs
 * (message x destination) for the scheduler, and the text of recently queued
 * small messages, within a bound, for their first delivery attempt.
 */
import { createReadStream, constants as fsConstants } from 'node:fs';
import { access, mkdir, open, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Clock } from '../../core/plugin.ts';
import type { Logger } from '../../core/types.ts';
import { DueIndex } from '../queue/due-index.ts';
import { readHeaderSection } from '../queue/message-read.ts';
import type {
  DestinationRoom,
  EnvelopeInput,
  Lease,
  LeasedRecipient,
  MessageContent,
  QueueDetail,
  QueueFilter,
  QueueStats,
  QueueStore,
  QueueSummary,
  RecipientOutcome,
  RecipientState,
} from '../queue/types.ts';
import { BodyCache } from './body-cache.ts';
import { TmpFilePool } from './durable-file.ts';
import { DirSync } from './group-sync.ts';
import { Journal, type JournalSlot, type RecoveredMessage, type Segment } from './journal.ts';
import { messageRecord } from './journal-record.ts';
import {
  envelopeFor,
  isQueueId,
  newQueueId,
  type QueueEnvelope,
  readQueueHeader,
  writeQueueFile,
  writeQueueFileFrom,
} from './queue-file.ts';
import { freshState, type MessageState, parseState, readStateFile, writeStateFile } from './state-file.ts';

export interface FsQueueOptions {
  readonly root: string;
  readonly fsync: boolean;
  readonly clock: Clock;
  readonly log: Logger;
  /** Octets of recently queued messages kept in memory for their first delivery (default 32 MiB; 0: none). */
  readonly memoryCache?: number;
  /** Put messages of up to 256 KiB in the journal on arrival (default true). */
  readonly journal?: boolean;
  /** Octets per journal segment (tests use small ones). */
  readonly journalSegmentSize?: number;
}

export const DEFAULT_MEMORY_CACHE = 32 * 1024 * 1024;

interface Entry {
  readonly id: string;
  readonly envelope: QueueEnvelope;
  readonly receivedAt: number;
  /** The file holding the message octets: its queue file, or a journal segment. */
  path: string;
  bodyOffset: number;
  /** Set while the message is in the journal (its octets end there, not at the end of the file). */
  slot: JournalSlot | undefined;
  readonly destinations: readonly string[];
  state: MessageState;
  /** Destinations with a job out for delivery. */
  readonly leased: Set<string>;
  removed: boolean;
  /** A state sidecar may exist on disk (written, or found at start). */
  hasState: boolean;
  /** Durable writes for this message, in order (undefined: none under way). */
  persisting: Promise<void> | undefined;
}

const LOAD_PARALLEL = 16;
/** Empty files kept open in `tmp/` for the next writes. */
const TMP_FILES_AHEAD = 8;

/** A policy action asked for the message to be set aside (see `QueueStore.enqueue`). */
function quarantinedOnArrival(envelope: { readonly attributes: QueueEnvelope['attributes'] }): boolean {
  return envelope.attributes.quarantine !== undefined;
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** The earliest next attempt of the pending recipients, per destination. */
function earliestAttempts(e: Entry): Map<string, number> {
  const earliest = new Map<string, number>();
  const recipients = e.envelope.recipients;
  for (let i = 0; i < recipients.length; i++) {
    const s = e.state.recipients[i] as RecipientState;
    if (s.status !== 'pending') continue;
    const domain = (recipients[i] as QueueEnvelope['recipients'][number]).domain;
    const at = earliest.get(domain);
    if (at === undefined || s.nextAttemptAt < at) earliest.set(domain, s.nextAttemptAt);
  }
  return earliest;
}

export class FsQueueStore implements QueueStore {
  readonly root: string;
  readonly dirs: { journal: string; tmp: string; messages: string; state: string; corrupt: string };
  readonly #o: FsQueueOptions;
  readonly #entries = new Map<string, Entry>();
  readonly #due = new DueIndex();
  readonly #wake: Array<() => void> = [];
  readonly #writes = new Set<Promise<void>>();
  readonly messageSync: DirSync;
  readonly stateSync: DirSync;
  readonly #bodies: BodyCache;
  readonly #tmpFiles: TmpFilePool;
  #journal: Journal | undefined;
  #recovered: RecoveredMessage[] = [];
  #closed = false;
  #seq = 0;
  /** Resolves once the messages found at start are loaded and scheduled. */
  ready: Promise<void> = Promise.resolve();
  /** `ready` has resolved: the scheduler's calls need not wait for it. */
  #loaded = false;

  private constructor(opts: FsQueueOptions) {
    this.#o = opts;
    this.root = opts.root;
    this.dirs = {
      journal: join(opts.root, 'journal'),
      tmp: join(opts.root, 'tmp'),
      messages: join(opts.root, 'messages'),
      state: join(opts.root, 'state'),
      corrupt: join(opts.root, 'corrupt'),
    };
    this.messageSync = new DirSync(this.dirs.messages);
    this.stateSync = new DirSync(this.dirs.state);
    this.#bodies = new BodyCache(opts.memoryCache ?? DEFAULT_MEMORY_CACHE);
    this.#tmpFiles = new TmpFilePool(this.dirs.tmp, { sync: opts.fsync, size: TMP_FILES_AHEAD });
  }

  /**
   * Create the directories, empty `tmp/` (half-written files were never
   * acknowledged), list the queue, and load it in the background (`ready`).
   */
  static async open(opts: FsQueueOptions): Promise<FsQueueStore> {
    const store = new FsQueueStore(opts);
    for (const d of Object.values(store.dirs)) await mkdir(d, { recursive: true, mode: 0o700 });
    let cleaned = 0;
    for (const name of await readdir(store.dirs.tmp)) {
      await unlink(join(store.dirs.tmp, name)).catch(() => {});
      cleaned++;
    }
    if (cleaned > 0)
      opts.log.info({ files: cleaned }, 'removed unfinished writes from the queue tmp directory');
    if (opts.journal ?? true) {
      const { journal, recovered } = await Journal.open({
        dir: store.dirs.journal,
        corruptDir: store.dirs.corrupt,
        sync: opts.fsync,
        log: opts.log,
        onCompact: (segment) => store.#compact(segment),
        ...(opts.journalSegmentSize ? { segmentSize: opts.journalSegmentSize } : {}),
      });
      store.#journal = journal;
      store.#recovered = recovered;
    }
    const names = await readdir(store.dirs.messages);
    store.ready = store.#load(names);
    store.ready.then(
      () => {
        store.#loaded = true;
      },
      (err) => opts.log.error({ err }, 'loading the queue failed'),
    );
    return store;
  }

  onWake(listener: () => void): void {
    this.#wake.push(listener);
  }

  #wakeUp(): void {
    for (const fn of this.#wake) fn();
  }

  // ---- loading ------------------------------------------------------------

  async #load(names: string[]): Promise<void> {
    const present = new Set(names);
    let corrupt = 0;
    let next = 0;
    const worker = async () => {
      while (next < names.length) {
        const name = names[next++] as string;
        if (!(await this.#loadOne(name))) corrupt++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(LOAD_PARALLEL, names.length) }, worker));
    this.#adoptJournal(present);
    // State without its message (a crash between the two deletions). Files left alone keep theirs.
    for (const name of await readdir(this.dirs.state)) {
      if (!present.has(name)) await unlink(join(this.dirs.state, name)).catch(() => {});
    }
    if (this.#entries.size > 0 || corrupt > 0) {
      this.#o.log.info({ messages: this.#entries.size, corrupt }, 'queue loaded');
    }
    this.#wakeUp();
  }

  /** Load one queue file; false when it was set aside. */
  async #loadOne(name: string): Promise<boolean> {
    const log = this.#o.log;
    const path = join(this.dirs.messages, name);
    if (!isQueueId(name)) {
      log.warn({ file: path }, 'ignoring a file in the queue that is not named like a queue file');
      return true;
    }
    let header: Awaited<ReturnType<typeof readQueueHeader>>;
    try {
      header = await readQueueHeader(path, name);
    } catch (err) {
      if (isMissing(err)) return true;
      log.error({ err, file: path }, 'cannot read queue file; leaving it in place');
      return false;
    }
    if (!header.ok) {
      if (header.unsupported) {
        log.error(
          { file: path, reason: header.reason },
          'queue file of another format version; leaving it alone',
        );
      } else {
        log.error(
          { file: path, reason: header.reason },
          'corrupt queue file moved to corrupt/, not delivered',
        );
        await this.#quarantine(path, name);
      }
      return false;
    }
    const { envelope, bodyOffset } = header;
    const receivedAt = Date.parse(envelope.receivedAt);
    const statePath = join(this.dirs.state, name);
    const text = await readStateFile(statePath);
    let state = text === undefined ? undefined : parseState(text, envelope.recipients.length);
    if (text !== undefined && !state) {
      log.error(
        { file: statePath },
        'corrupt queue state moved to corrupt/; every recipient is pending again',
      );
      await this.#quarantine(statePath, `${name}.state`);
    }
    state ??= freshState(envelope.recipients.length, receivedAt, quarantinedOnArrival(envelope));
    const entry = this.#entry(envelope, path, bodyOffset, state);
    entry.hasState = text !== undefined;
    if (!state.recipients.some((r) => r.status === 'pending')) {
      // Finished before the crash, not yet removed.
      await this.#remove(entry, false);
      return true;
    }
    this.#entries.set(name, entry);
    this.#index(entry);
    return true;
  }

  /**
   * The journal's messages left by the last run. One that also has a queue
   * file was moved out of the journal before the crash: the file wins.
   */
  #adoptJournal(files: ReadonlySet<string>): void {
    const journal = this.#journal;
    if (!journal) return;
    for (const { envelope, slot } of this.#recovered) {
      if (files.has(envelope.id) || this.#entries.has(envelope.id)) {
        journal.forget(slot);
        continue;
      }
      const entry = this.#entry(
        envelope,
        slot.segment.path,
        slot.bodyStart,
        freshState(
          envelope.recipients.length,
          Date.parse(envelope.receivedAt),
          quarantinedOnArrival(envelope),
        ),
      );
      entry.slot = slot;
      this.#entries.set(envelope.id, entry);
      this.#index(entry);
    }
    this.#recovered = [];
    journal.sweep();
  }

  async #quarantine(path: string, name: string): Promise<void> {
    const target = join(this.dirs.corrupt, `${name}.${this.#o.clock.now().toString(36)}`);
    await rename(path, target).catch((err) =>
      this.#o.log.error({ err, file: path }, 'cannot move corrupt file aside'),
    );
  }

  /** `receivedAt`: the arrival time when the caller has it as a number (else parsed from the envelope). */
  #entry(
    envelope: QueueEnvelope,
    path: string,
    bodyOffset: number,
    state: MessageState,
    receivedAt = Date.parse(envelope.receivedAt),
  ): Entry {
    const rs = envelope.recipients;
    return {
      id: envelope.id,
      envelope,
      receivedAt,
      path,
      bodyOffset,
      slot: undefined,
      destinations:
        rs.length === 1
          ? [(rs[0] as QueueEnvelope['recipients'][number]).domain]
          : [...new Set(rs.map((r) => r.domain))],
      state,
      leased: new Set(),
      removed: false,
      hasState: false,
      persisting: undefined,
    };
  }

  // ---- the due index --------------------------------------------------------

  /** Bring the due index in line with the entry's state. */
  #index(e: Entry): void {
    const earliest = e.removed || e.state.held || e.state.quarantined ? undefined : earliestAttempts(e);
    for (const d of e.destinations) {
      const at = earliest?.get(d);
      if (at === undefined || e.leased.has(d)) this.#due.delete(d, e.id);
      else this.#due.set(d, e.id, at);
    }
  }

  // ---- durable writes -------------------------------------------------------

  /**
   * Run `run` once the entry's earlier writes are done (never synchronously:
   * callers may be inside the journal, e.g. its compaction request); `close`
   * waits for it.
   */
  #serial(e: Entry, run: () => Promise<void>): Promise<void> {
    const p = (e.persisting ?? Promise.resolve()).then(run, run);
    e.persisting = p;
    const tracked = p.finally(() => {
      this.#writes.delete(tracked);
      if (e.persisting === p) e.persisting = undefined;
    });
    this.#writes.add(tracked);
    return tracked;
  }

  /** Write the entry's current state (after earlier writes for it finished). */
  #persist(e: Entry): Promise<void> {
    const run = async () => {
      if (e.removed) return;
      const slot = e.slot;
      // State needs a queue file to sit beside: a journaled message moves out first.
      if (slot) await this.#moveToFile(e, slot);
      e.hasState = true;
      await writeStateFile(this.dirs, this.stateSync, this.#tmpFiles, e.id, e.state, this.#o.fsync);
      // The file is durable: should the release be lost in a crash, the file still wins.
      if (slot) await this.#journal?.release(e.id, slot, false);
    };
    return this.#serial(e, run);
  }

  /**
   * Forget the entry and delete its files. `durable`: wait until the removal
   * is on disk (a deleted message must not come back). Otherwise (delivered
   * or bounced: every recipient is final) the directory fsync is left to the
   * next one anyone makes: a power loss before it re-delivers the message,
   * which the at-least-once promise allows.
   */
  #remove(e: Entry, durable: boolean): Promise<void> {
    e.removed = true;
    this.#entries.delete(e.id);
    this.#bodies.delete(e.id);
    this.#index(e);
    const slot = e.slot;
    if (slot && this.#journal && !e.persisting && !(durable && this.#o.fsync)) {
      // The common end of a delivered message: a release record that rides with the next write.
      try {
        this.#journal.release(e.id, slot, false);
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const run = async () => {
      const slot = e.slot;
      if (slot && this.#journal) {
        await this.#journal.release(e.id, slot, durable && this.#o.fsync);
        return;
      }
      await unlink(e.path).catch((err) => {
        if (!isMissing(err)) throw err;
      });
      if (e.hasState) {
        await unlink(join(this.dirs.state, e.id)).catch((err) => {
          if (!isMissing(err)) throw err;
        });
      }
      if (!this.#o.fsync) return;
      if (durable) {
        await Promise.all([this.messageSync.sync(), ...(e.hasState ? [this.stateSync.sync()] : [])]);
        return;
      }
      this.messageSync.syncSoon();
      if (e.hasState) this.stateSync.syncSoon();
    };
    return this.#serial(e, run);
  }

  /** Give a journaled message a queue file of its own (the journal entry is released by the caller). */
  async #moveToFile(e: Entry, slot: JournalSlot): Promise<void> {
    const body = this.#bodies.get(e.id) ?? (await readRange(slot.segment.path, slot.bodyStart, slot.bodyEnd));
    const written = await writeQueueFileFrom(
      this.dirs,
      this.messageSync,
      this.#tmpFiles,
      e.envelope,
      body,
      this.#o.fsync,
    );
    e.path = written.path;
    e.bodyOffset = written.bodyOffset;
    e.slot = undefined;
  }

  /** The journal asks for `segment`'s messages to move out: it is holding newer segments back. */
  #compact(segment: Segment): void {
    for (const e of this.#entries.values()) {
      if (e.slot?.segment === segment && !e.removed) {
        this.#persist(e).catch((err) =>
          this.#o.log.error({ err, id: e.id }, 'cannot move a message out of the queue journal'),
        );
      }
    }
  }

  /** The message octets of `e`, from its file. */
  #fileStream(e: Entry): Readable {
    return createReadStream(e.path, {
      start: e.bodyOffset,
      ...(e.slot ? { end: e.slot.bodyEnd - 1 } : {}),
    });
  }

  // ---- QueueStore -------------------------------------------------------------

  enqueue(input: EnvelopeInput, content: MessageContent): Promise<string> {
    if (this.#closed) return Promise.reject(new Error('the queue is closed'));
    if (input.recipients.length === 0)
      return Promise.reject(new Error('a message needs at least one recipient'));
    const id = newQueueId(this.#o.clock.now(), this.#seq++);
    if (this.#journal && Buffer.isBuffer(content)) {
      try {
        return this.#enqueueJournal(this.#journal, id, input, content);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.#enqueueFile(id, input, content);
  }

  async #enqueueFile(id: string, input: EnvelopeInput, content: MessageContent): Promise<string> {
    const written = await writeQueueFile(
      this.dirs,
      this.messageSync,
      this.#tmpFiles,
      id,
      input,
      content,
      this.#o.fsync,
    );
    const entry = this.#entry(
      written.envelope,
      written.path,
      written.bodyOffset,
      freshState(input.recipients.length, input.receivedAt, quarantinedOnArrival(input)),
      Math.trunc(input.receivedAt),
    );
    this.#entries.set(id, entry);
    if (Buffer.isBuffer(content) && !entry.state.quarantined) this.#bodies.add(id, content);
    this.#index(entry);
    this.#wakeUp();
    return id;
  }

  /** Append the message to the journal; resolves once its record is durable. Throws if the journal is closed. */
  #enqueueJournal(journal: Journal, id: string, input: EnvelopeInput, body: Buffer): Promise<string> {
    const envelope = envelopeFor(id, input, body.length);
    const record = messageRecord(envelope, body);
    const { slot, durable } = journal.append(record.buffers, record.bodyOffset, body.length);
    return durable.then(
      () => {
        const entry = this.#entry(
          envelope,
          slot.segment.path,
          slot.bodyStart,
          freshState(input.recipients.length, input.receivedAt, quarantinedOnArrival(input)),
          Math.trunc(input.receivedAt),
        );
        entry.slot = slot;
        this.#entries.set(id, entry);
        // A quarantined message waits for an operator: no point keeping it in memory.
        if (!entry.state.quarantined) this.#bodies.add(id, body);
        this.#index(entry);
        this.#wakeUp();
        return id;
      },
      (err: unknown) => {
        journal.forget(slot);
        throw err;
      },
    );
  }

  // leaseDue and nextDue run for every look the scheduler takes: no async frame once loaded.
  leaseDue(now: number, limit: number, room?: DestinationRoom): Promise<Lease[]> {
    if (!this.#loaded) return this.ready.then(() => this.#leaseDue(now, limit, room));
    try {
      return Promise.resolve(this.#leaseDue(now, limit, room));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #leaseDue(now: number, limit: number, room: DestinationRoom | undefined): Lease[] {
    if (this.#closed || limit <= 0) return [];
    const leases: Lease[] = [];
    for (const job of this.#due.take(now, limit, room)) {
      const e = this.#entries.get(job.id);
      if (!e || e.removed) continue;
      const recipients: LeasedRecipient[] = [];
      const all = e.envelope.recipients;
      for (let index = 0; index < all.length; index++) {
        const r = all[index] as QueueEnvelope['recipients'][number];
        const s = e.state.recipients[index] as RecipientState;
        if (r.domain !== job.destination || s.status !== 'pending') continue;
        recipients.push({
          index,
          address: r.address,
          attributes: r.attributes,
          attempts: s.attempts,
          warned: s.warned === true,
        });
      }
      if (recipients.length === 0) continue;
      e.leased.add(job.destination);
      leases.push({
        id: e.id,
        destination: job.destination,
        from: e.envelope.from,
        attributes: e.envelope.attributes,
        receivedAt: e.receivedAt,
        size: e.envelope.size,
        recipients,
        stream: () => this.#stream(e),
      });
    }
    return leases;
  }

  /** The message of `e`: from memory when it is still cached, else from its file. */
  #stream(e: Entry): Readable {
    const body = this.#bodies.get(e.id);
    if (body === undefined) return this.#fileStream(e);
    return new Readable({
      read() {
        this.push(body);
        this.push(null);
      },
    });
  }

  nextDue(room?: DestinationRoom): Promise<number | undefined> {
    if (!this.#loaded) return this.ready.then(() => this.#due.next(room));
    return Promise.resolve(this.#due.next(room));
  }

  settle(lease: Lease, outcomes: readonly RecipientOutcome[], now: number): Promise<void> {
    try {
      return this.#settle(lease, outcomes, now);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  // Not async: a delivered message's removal is synchronous work (see `#remove`), once per message.
  #settle(lease: Lease, outcomes: readonly RecipientOutcome[], now: number): Promise<void> {
    const e = this.#entries.get(lease.id);
    // After close the result is dropped: the recipients stay pending and are retried after a restart.
    if (!e || e.removed || this.#closed) return Promise.resolve();
    e.leased.delete(lease.destination);
    for (const o of outcomes) {
      const prev = e.state.recipients[o.index];
      if (prev?.status !== 'pending') continue;
      const next: { -readonly [K in keyof RecipientState]: RecipientState[K] } = {
        status: o.status === 'deferred' ? 'pending' : o.status,
        attempts: prev.attempts + 1,
        nextAttemptAt: o.status === 'deferred' ? (o.nextAttemptAt ?? now) : prev.nextAttemptAt,
        lastAttemptAt: now,
      };
      if (o.reply) next.reply = o.reply;
      if (o.mta) next.mta = o.mta;
      if (o.mtaAddress) next.mtaAddress = o.mtaAddress;
      if (prev.warned === true || o.warned === true) next.warned = true;
      e.state.recipients[o.index] = next;
    }
    if (!e.state.recipients.some((r) => r.status === 'pending')) return this.#remove(e, false);
    // The next attempt is minutes away at best: keep memory for fresh messages.
    this.#bodies.delete(e.id);
    this.#index(e);
    return this.#persist(e);
  }

  // ---- management -------------------------------------------------------------

  async #get(id: string): Promise<Entry | undefined> {
    await this.ready;
    if (!isQueueId(id)) return undefined;
    const e = this.#entries.get(id);
    return e && !e.removed ? e : undefined;
  }

  async list(filter: QueueFilter = {}): Promise<QueueSummary[]> {
    await this.ready;
    const search = filter.search?.toLowerCase();
    const destination = filter.destination?.toLowerCase();
    let skip = filter.offset ?? 0;
    const out: QueueSummary[] = [];
    const all = [...this.#entries.values()].sort(
      (a, b) => a.receivedAt - b.receivedAt || (a.id < b.id ? -1 : 1),
    );
    for (const e of all) {
      const s = this.#summary(e);
      if (filter.state && s.state !== filter.state) continue;
      if (
        search &&
        !e.envelope.from.toLowerCase().includes(search) &&
        !e.envelope.recipients.some((r) => r.address.toLowerCase().includes(search))
      ) {
        continue;
      }
      if (
        destination !== undefined &&
        !e.envelope.recipients.some(
          (r, i) => r.domain === destination && e.state.recipients[i]?.status === 'pending',
        )
      ) {
        continue;
      }
      if (skip > 0) {
        skip--;
        continue;
      }
      out.push(s);
      if (filter.limit !== undefined && out.length >= filter.limit) break;
    }
    return out;
  }

  async show(id: string): Promise<QueueDetail | undefined> {
    const e = await this.#get(id);
    if (!e) return undefined;
    let headers = '';
    try {
      headers = (await readHeaderSection(this.#fileStream(e), 64 * 1024)).toString('utf8');
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
    return {
      ...this.#summary(e),
      attributes: e.envelope.attributes,
      source: e.envelope.source,
      recipientStates: e.envelope.recipients.map((r, i) => ({
        address: r.address,
        domain: r.domain,
        attributes: r.attributes,
        ...(e.state.recipients[i] as RecipientState),
      })),
      headers,
    };
  }

  async hold(id: string): Promise<boolean> {
    const e = await this.#get(id);
    if (!e) return false;
    if (!e.state.held) {
      e.state.held = true;
      this.#bodies.delete(e.id);
      this.#index(e);
      await this.#persist(e);
    }
    return true;
  }

  async release(id: string): Promise<boolean> {
    const e = await this.#get(id);
    if (!e) return false;
    if (e.state.held || e.state.quarantined) {
      e.state.held = false;
      e.state.quarantined = false;
      this.#index(e);
      await this.#persist(e);
      this.#wakeUp();
    }
    return true;
  }

  async retryNow(id: string): Promise<boolean> {
    const e = await this.#get(id);
    if (!e) return false;
    const now = this.#o.clock.now();
    e.state.recipients = e.state.recipients.map((r) =>
      r.status === 'pending' ? { ...r, nextAttemptAt: Math.min(r.nextAttemptAt, now) } : r,
    );
    this.#index(e);
    await this.#persist(e);
    this.#wakeUp();
    return true;
  }

  async delete(id: string): Promise<boolean> {
    const e = await this.#get(id);
    if (!e) return false;
    await this.#remove(e, true);
    return true;
  }

  async content(id: string): Promise<{ size: number; stream(): Readable } | undefined> {
    const e = await this.#get(id);
    if (!e) return undefined;
    return { size: e.envelope.size, stream: () => this.#stream(e) };
  }

  async check(): Promise<void> {
    if (this.#closed) throw new Error('the queue store is closed');
    await this.ready;
    for (const dir of [this.dirs.messages, this.dirs.state, this.dirs.tmp]) {
      await access(dir, fsConstants.R_OK | fsConstants.W_OK | fsConstants.X_OK);
    }
  }

  async stats(): Promise<QueueStats> {
    await this.ready;
    let held = 0;
    let quarantined = 0;
    let deferred = 0;
    let active = 0;
    let pending = 0;
    let bytes = 0;
    let oldest: number | undefined;
    const perDestination = new Map<string, number>();
    for (const e of this.#entries.values()) {
      const s = this.#summary(e);
      if (s.state === 'held') held++;
      if (s.state === 'quarantined') quarantined++;
      if (s.state === 'deferred') deferred++;
      active += e.leased.size;
      pending += s.pending;
      bytes += e.envelope.size;
      if (oldest === undefined || e.receivedAt < oldest) oldest = e.receivedAt;
      e.envelope.recipients.forEach((r, i) => {
        if (e.state.recipients[i]?.status === 'pending') {
          perDestination.set(r.domain, (perDestination.get(r.domain) ?? 0) + 1);
        }
      });
    }
    const destinations = [...perDestination]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, 10)
      .map(([destination, n]) => ({ destination, pending: n }));
    return {
      messages: this.#entries.size,
      held,
      quarantined,
      deferred,
      active,
      recipients: { pending },
      bytes,
      oldestReceivedAt: oldest,
      nextAttemptAt: this.#due.next(),
      destinations,
    };
  }

  #summary(e: Entry): QueueSummary {
    let pending = 0;
    let attempts = 0;
    let next: number | undefined;
    let last: RecipientState | undefined;
    for (const r of e.state.recipients) {
      if (r.status !== 'pending') continue;
      pending++;
      attempts = Math.max(attempts, r.attempts);
      if (next === undefined || r.nextAttemptAt < next) next = r.nextAttemptAt;
      if (
        r.lastAttemptAt !== undefined &&
        (last?.lastAttemptAt === undefined || r.lastAttemptAt > last.lastAttemptAt)
      ) {
        last = r;
      }
    }
    const state = e.state.quarantined
      ? 'quarantined'
      : e.state.held
        ? 'held'
        : e.leased.size > 0
          ? 'active'
          : attempts > 0
            ? 'deferred'
            : 'queued';
    const quarantine = e.state.quarantined ? e.envelope.attributes.quarantine : undefined;
    return {
      id: e.id,
      from: e.envelope.from,
      receivedAt: e.receivedAt,
      size: e.envelope.size,
      state,
      recipients: e.envelope.recipients.length,
      pending,
      attempts,
      nextAttemptAt: next,
      lastReply: last?.reply,
      ...(quarantine === undefined ? {} : { quarantine }),
    };
  }

  /** Stop taking work; wait for durable writes in progress. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.ready.catch(() => {});
    await Promise.allSettled([...this.#writes]);
    await this.#journal?.close();
    await this.#tmpFiles.close();
    await this.messageSync.close();
    await this.stateSync.close();
  }
}

/** Octets `[start, end)` of the file at `path`. */
async function readRange(path: string, start: number, end: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(end - start);
    let have = 0;
    while (have < buf.length) {
      const { bytesRead } = await fh.read(buf, have, buf.length - have, start + have);
      if (bytesRead === 0) throw new Error(`${path} ends before octet ${end}`);
      have += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}
