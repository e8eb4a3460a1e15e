/**
 * Writes one message into a Maildir the way the format wants it
 * (cr.yp.to/proto/maildir.html): a unique file in `tmp/`, written and fsynced,
 * then linked into `new/` (a link never replaces an existing file), unlinked
 * from `tmp/`, and the `new/` directory fsynced.
 *
 * Exactly once: the unique part of the name carries a tag derived from the
 * queue id and the recipient (`X<tag>`), the same on every attempt, and every
 * delivery is recorded (delivery-records.ts) before its link into `new/`. A
 * delivery that may repeat an earlier one (a retry, or a message queued before
 * this server started: the earlier run may have been killed after the link
 * and before the queue recorded the delivery) looks up its record: none means
 * no earlier copy; one leads to the file in `new/`. Only when that file is not
 * there (a mail reader moved it to `cur/`, appending `:2,FLAGS`, or the
 * earlier attempt stopped before the link), or for a message older than the
 * records, are `new/` and `cur/` listed for the tag. When found, nothing is
 * written.
 */
import { createHash } from 'node:crypto';
import { link, mkdir, open, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { type DeliveryRecords, fsyncDir } from './delivery-records.ts';

export interface MaildirWriterOptions {
  /** Host name for unique names (`/` and `:` are escaped as the format asks). */
  readonly hostname: string;
  readonly fsync: boolean;
  readonly now: () => number;
  /** Where each delivery is recorded before its link into `new/`. */
  readonly records: DeliveryRecords;
}

/** What makes a delivery the same delivery again: one message (queue id) to one recipient. */
export interface DeliveryKey {
  readonly queueId: string;
  readonly recipient: string;
}

export interface Delivered {
  /** Path of the file relative to the Maildir (`new/…` or `cur/…`). */
  readonly file: string;
  /** The file was there already, from an earlier attempt: nothing was written. */
  readonly earlier: boolean;
}

/**
 * `tmp/` files older than this may be removed by anyone (the Maildir
 * convention: a delivery never takes 36 hours).
 */
export const STALE_TMP_MS = 36 * 60 * 60 * 1000;

/** Our own names: `time.M<usec>P<pid>X<tag>.<host>`. */
const OWN_NAME = /^\d+\.M\d+P(\d+)X[0-9a-f]{32}\.(.+)$/;

/** The tag of a delivery: 128 bits of SHA-256 over queue id and recipient, in hex. */
export function deliveryTag(key: DeliveryKey): string {
  return createHash('sha256').update(`${key.queueId}\n${key.recipient}`).digest('hex').slice(0, 32);
}

export class MaildirWriter {
  readonly #host: string;
  readonly #fsync: boolean;
  readonly #now: () => number;
  readonly #records: DeliveryRecords;
  /** Maildirs whose `tmp/` was swept by this writer. */
  readonly #swept = new Set<string>();
  /** When this process started (wall clock, as file times are). */
  readonly #processStart = performance.timeOrigin;

  constructor(opts: MaildirWriterOptions) {
    this.#host = opts.hostname.replace(/\//g, '\\057').replace(/:/g, '\\072');
    this.#fsync = opts.fsync;
    this.#now = opts.now;
    this.#records = opts.records;
  }

  /** `time.M<usec>P<pid>X<tag>.<host>` */
  uniqueName(key: DeliveryKey): string {
    const now = this.#now();
    const sec = Math.floor(now / 1000);
    const usec = Math.floor((now % 1000) * 1000);
    return `${sec}.M${usec}P${process.pid}X${deliveryTag(key)}.${this.#host}`;
  }

  /** Whether `dir` is a Maildir (has `tmp`, `new` and `cur`). */
  async exists(dir: string): Promise<boolean> {
    try {
      const checks = await Promise.all(['tmp', 'new', 'cur'].map((d) => stat(join(dir, d))));
      return checks.every((s) => s.isDirectory());
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  async create(dir: string): Promise<void> {
    for (const sub of ['tmp', 'new', 'cur']) await mkdir(join(dir, sub), { recursive: true, mode: 0o700 });
  }

  /**
   * The file an earlier delivery of `key` left in `new/` or `cur/`, if any.
   * For a message that arrived at `receivedAt`, since the records began, the
   * record tells (see above); otherwise `new/` and `cur/` are listed.
   */
  async findEarlier(
    dir: string,
    key: DeliveryKey,
    receivedAt: number | undefined,
  ): Promise<string | undefined> {
    const tag = deliveryTag(key);
    if (await this.#records.covers(receivedAt)) {
      const record = await this.#records.find(tag);
      if (record === undefined) return undefined;
      if (record !== 'unreadable' && record.maildir === dir && (await isFile(join(dir, 'new', record.file))))
        return `new/${record.file}`;
    }
    return this.#list(dir, tag);
  }

  /** Look for `X<tag>.<host>` followed by the end of the name, `,` or `:` in `new/` and `cur/`. */
  async #list(dir: string, tag: string): Promise<string | undefined> {
    const marker = `X${tag}.${this.#host}`;
    for (const sub of ['new', 'cur']) {
      for (const name of await readdir(join(dir, sub))) {
        const at = name.indexOf(marker);
        if (at < 0) continue;
        const next = name[at + marker.length];
        if (next === undefined || next === ',' || next === ':') return `${sub}/${name}`;
      }
    }
    return undefined;
  }

  /**
   * Remove the `tmp/` files no delivery will finish: any older than 36 hours,
   * and ours (by name) from this host whose writer is gone: its process is no
   * longer running, or it had our pid before this process started. Once per
   * Maildir and writer; returns how many went.
   */
  async sweep(dir: string): Promise<number> {
    if (this.#swept.has(dir)) return 0;
    this.#swept.add(dir);
    const tmp = join(dir, 'tmp');
    const wall = Date.now();
    let removed = 0;
    for (const name of await readdir(tmp)) {
      const path = join(tmp, name);
      const info = await stat(path).catch(() => undefined);
      if (!info?.isFile()) continue;
      const own = OWN_NAME.exec(name);
      const abandoned =
        wall - info.mtimeMs > STALE_TMP_MS ||
        (own !== null && own[2] === this.#host && this.#writerGone(Number(own[1]), info.mtimeMs));
      if (
        abandoned &&
        (await unlink(path).then(
          () => true,
          () => false,
        ))
      )
        removed++;
    }
    return removed;
  }

  #writerGone(pid: number, mtimeMs: number): boolean {
    if (pid === process.pid) return mtimeMs < this.#processStart;
    try {
      process.kill(pid, 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  }

  /**
   * Write `head` then the body into `dir`, once per `key`: with `lookFirst`,
   * an earlier copy in `new/` or `cur/` is reported instead of writing again
   * (`receivedAt`: when the message arrived, if known).
   * On failure nothing is left behind (the `tmp/` file, the record and any link are removed).
   */
  async deliver(
    dir: string,
    head: Buffer,
    body: () => AsyncIterable<Buffer>,
    key: DeliveryKey,
    lookFirst: { readonly receivedAt: number | undefined } | false,
  ): Promise<Delivered> {
    if (lookFirst) {
      const earlier = await this.findEarlier(dir, key, lookFirst.receivedAt);
      if (earlier !== undefined) return { file: earlier, earlier: true };
    }
    const name = this.uniqueName(key);
    const tmpPath = join(dir, 'tmp', name);
    const fh = await open(tmpPath, 'wx', 0o600);
    let size = 0;
    let recordPath: string | undefined;
    try {
      await fh.write(head);
      size += head.length;
      for await (const chunk of body()) {
        let off = 0;
        while (off < chunk.length) {
          const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
          off += bytesWritten;
        }
        size += chunk.length;
      }
      // The record is durable before the link: a copy in new/ always has one.
      const [synced, recorded] = await Promise.allSettled([
        this.#fsync ? fh.sync() : Promise.resolve(),
        this.#records.write(deliveryTag(key), { maildir: dir, file: `${name},S=${size}` }),
      ]);
      if (recorded.status === 'fulfilled') recordPath = recorded.value;
      if (recorded.status === 'rejected') throw recorded.reason;
      if (synced.status === 'rejected') throw synced.reason;
      await fh.close();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(tmpPath).catch(() => {});
      if (recordPath !== undefined) await this.#records.remove(recordPath);
      throw err;
    }
    const finalName = `${name},S=${size}`;
    const newPath = join(dir, 'new', finalName);
    try {
      await link(tmpPath, newPath);
    } catch (err) {
      // The same name within the same second: this very delivery is there already.
      if ((err as NodeJS.ErrnoException).code === 'EEXIST')
        return { file: `new/${finalName}`, earlier: true };
      await this.#records.remove(recordPath);
      throw err;
    } finally {
      await unlink(tmpPath).catch(() => {});
    }
    if (this.#fsync) {
      try {
        await fsyncDir(join(dir, 'new'));
      } catch (err) {
        // Reported as not delivered: take the copy back so that the retry is the only one.
        await unlink(newPath).catch(() => {});
        await this.#records.remove(recordPath);
        throw err;
      }
    }
    return { file: `new/${finalName}`, earlier: false };
  }
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}
