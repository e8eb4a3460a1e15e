/**
 * A record of each delivery (one message to one recipient) that may have
 * reached a Maildir: `<dir>/<day>/<tag>`, holding the Maildir and the file
 * name in `new/`. It is written (and, with fsync, made durable) before the
 * message is linked into `new/`, so a delivery without a record never got
 * there: a repeat looks up one record and one file instead of listing the
 * Maildir.
 *
 * Records are grouped by the (UTC) day they were written and a whole day is
 * removed once it is older than the retention. `<dir>/since` holds when the
 * records began: a message that arrived before (or at an unknown time) may
 * have been delivered by an earlier version that wrote none.
 */
import { mkdir, open, readdir, readFile, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface DeliveryRecordsOptions {
  /** Directory of the records (created when missing). */
  readonly dir: string;
  readonly fsync: boolean;
  /** How long a record is kept (ms). */
  readonly keepMs: number;
  readonly now: () => number;
}

/** Where a delivery put its copy: the Maildir and the name it got in `new/`. */
export interface DeliveryRecord {
  readonly maildir: string;
  readonly file: string;
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;
const dayOf = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

export class DeliveryRecords {
  readonly #dir: string;
  readonly #fsync: boolean;
  readonly #keepMs: number;
  readonly #now: () => number;
  #since: Promise<number> | undefined;
  /** Day directories this process made sure of (created and synced). */
  readonly #days = new Map<string, Promise<void>>();
  #prunedOn: string | undefined;

  constructor(opts: DeliveryRecordsOptions) {
    this.#dir = opts.dir;
    this.#fsync = opts.fsync;
    this.#keepMs = opts.keepMs;
    this.#now = opts.now;
  }

  /** When the records began (server clock); set on first use. */
  since(): Promise<number> {
    this.#since ??= this.#readSince();
    return this.#since;
  }

  async #readSince(): Promise<number> {
    const file = join(this.#dir, 'since');
    const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    const known = Number(text);
    if (text !== undefined && Number.isFinite(known)) return known;
    const now = this.#now();
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    await this.#writeSynced(file, String(now));
    return now;
  }

  /**
   * Whether a delivery of a message that arrived at `receivedAt` has a record
   * if it reached the Maildir.
   */
  async covers(receivedAt: number | undefined): Promise<boolean> {
    return receivedAt !== undefined && receivedAt >= (await this.since());
  }

  /** The record of delivery `tag`, `'unreadable'` when one is there but cannot be read whole. */
  async find(tag: string): Promise<DeliveryRecord | 'unreadable' | undefined> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch (err) {
      // The records are gone (removed by hand): what they would have said is unknown.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'unreadable';
      throw err;
    }
    const days = names.filter((d) => DAY.test(d)).sort();
    for (let i = days.length - 1; i >= 0; i--) {
      let text: string;
      try {
        text = await readFile(join(this.#dir, days[i] as string, tag), 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const [maildir, file, end] = text.split('\n');
      return maildir && file && end === '' ? { maildir, file } : 'unreadable';
    }
    return undefined;
  }

  /** Record delivery `tag` (durably with fsync); returns the record's path. */
  async write(tag: string, record: DeliveryRecord): Promise<string> {
    await this.since();
    const day = dayOf(this.#now());
    await this.#prune(day);
    let made = this.#days.get(day);
    if (made === undefined) {
      made = this.#makeDay(day);
      this.#days.set(day, made);
      made.catch(() => this.#days.delete(day));
    }
    await made;
    const path = join(this.#dir, day, tag);
    // Only its name must be durable before the link: a record whose content
    // was lost is unreadable, and an unreadable record means "list the Maildir".
    const fh = await open(path, 'w', 0o600);
    try {
      await fh.writeFile(`${record.maildir}\n${record.file}\n`);
    } finally {
      await fh.close();
    }
    if (this.#fsync) await fsyncDir(join(this.#dir, day));
    return path;
  }

  /** Take back a record whose delivery did not happen (best effort: a record too many costs a listing). */
  async remove(path: string | undefined): Promise<void> {
    if (path !== undefined) await unlink(path).catch(() => {});
  }

  async #makeDay(day: string): Promise<void> {
    const created = await mkdir(join(this.#dir, day), { recursive: true, mode: 0o700 });
    if (created !== undefined && this.#fsync) await fsyncDir(this.#dir);
  }

  /** Once a day: remove the days older than the retention. */
  async #prune(today: string): Promise<void> {
    if (this.#prunedOn === today) return;
    this.#prunedOn = today;
    const oldest = dayOf(this.#now() - this.#keepMs);
    for (const d of await readdir(this.#dir)) {
      if (DAY.test(d) && d < oldest) {
        this.#days.delete(d);
        await rm(join(this.#dir, d), { recursive: true, force: true });
      }
    }
  }

  async #writeSynced(path: string, text: string): Promise<void> {
    const fh = await open(path, 'w', 0o600);
    try {
      await fh.writeFile(text);
      if (this.#fsync) await fh.sync();
    } finally {
      await fh.close();
    }
    if (this.#fsync) await fsyncDir(join(path, '..'));
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
