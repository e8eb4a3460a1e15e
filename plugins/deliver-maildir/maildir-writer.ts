/**
 * Writes one message into a Maildir the way the format wants it
 * (cr.yp.to/proto/maildir.html): a unique file in `tmp/`, written and fsynced,
 * then linked into `new/` (a link never replaces an existing file), unlinked
 * from `tmp/`, and the `new/` directory fsynced.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface MaildirWriterOptions {
  /** Host name for unique names (`/` and `:` are escaped as the format asks). */
  readonly hostname: string;
  readonly fsync: boolean;
  readonly now: () => number;
}

export class MaildirWriter {
  readonly #host: string;
  readonly #fsync: boolean;
  readonly #now: () => number;
  #seq = 0;

  constructor(opts: MaildirWriterOptions) {
    this.#host = opts.hostname.replace(/\//g, '\\057').replace(/:/g, '\\072');
    this.#fsync = opts.fsync;
    this.#now = opts.now;
  }

  /** `time.M<usec>P<pid>Q<seq>R<random>.<host>` */
  uniqueName(): string {
    const now = this.#now();
    const sec = Math.floor(now / 1000);
    const usec = Math.floor((now % 1000) * 1000);
    this.#seq++;
    return `${sec}.M${usec}P${process.pid}Q${this.#seq}R${randomBytes(4).toString('hex')}.${this.#host}`;
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

  /** Write `head` then `body` into `dir`; returns the file name in `new/`. */
  async deliver(dir: string, head: Buffer, body: AsyncIterable<Buffer>): Promise<string> {
    const name = this.uniqueName();
    const tmpPath = join(dir, 'tmp', name);
    const fh = await open(tmpPath, 'wx', 0o600);
    let size = 0;
    try {
      await fh.write(head);
      size += head.length;
      for await (const chunk of body) {
        let off = 0;
        while (off < chunk.length) {
          const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
          off += bytesWritten;
        }
        size += chunk.length;
      }
      if (this.#fsync) await fh.sync();
      await fh.close();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(tmpPath).catch(() => {});
      throw err;
    }
    const finalName = `${name},S=${size}`;
    try {
      await link(tmpPath, join(dir, 'new', finalName));
    } finally {
      await unlink(tmpPath).catch(() => {});
    }
    if (this.#fsync) await fsyncDir(join(dir, 'new'));
    return finalName;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
