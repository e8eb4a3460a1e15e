/**
 * Writing new files durably in few thread-pool round trips. Every round trip
 * costs a wait for the event loop as well as the system call, and a durable
 * enqueue used to make six in a row; now the acknowledgement waits for three:
 *
 * 1. the file is already open: `TmpFilePool` keeps a few empty files in
 *    `tmp/` opened ahead, refilled in the background;
 * 2. one `writev` of every buffer, on a descriptor opened `O_SYNC` when
 *    fsync is on: the write returns once the data and the file's metadata
 *    are on disk (synchronized I/O file integrity completion, the guarantee
 *    `fsync` gives), so the write and the fsync are one call;
 * 3. the rename into place (the close runs beside it: the file is already
 *    durable, closing it adds nothing);
 *
 * and then the caller's directory fsync (group commit, `group-sync.ts`).
 * Raw descriptors with the callback API, not `FileHandle`s: a `FileHandle`
 * costs an object with GC tracking and a promise per call.
 */
import { randomBytes } from 'node:crypto';
import { close, constants, fsync, open, writev } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';

const { O_WRONLY, O_CREAT, O_EXCL, O_SYNC } = constants;

export function openFd(path: string, flags: number | string): Promise<number> {
  return new Promise((resolve, reject) => {
    open(path, flags, 0o600, (err, fd) => (err ? reject(err) : resolve(fd)));
  });
}

export function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fsync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    close(fd, (err) => (err ? reject(err) : resolve()));
  });
}

function writevOnce(fd: number, buffers: readonly Buffer[], position: number | null): Promise<number> {
  return new Promise((resolve, reject) => {
    writev(fd, buffers as Buffer[], position, (err, written) => (err ? reject(err) : resolve(written)));
  });
}

/**
 * Write `buffers`, all of them (a short write continues): at the file's
 * current position, or at `position`, which leaves the file's position alone.
 */
export async function writevAll(fd: number, buffers: readonly Buffer[], position?: number): Promise<void> {
  let rest = buffers;
  let at = position ?? null;
  for (;;) {
    let left = 0;
    for (const b of rest) left += b.length;
    if (left === 0) return;
    let written = await writevOnce(fd, rest, at);
    if (written >= left) return;
    if (written === 0) throw new Error('write made no progress');
    if (at !== null) at += written;
    const next: Buffer[] = [];
    for (const b of rest) {
      if (written >= b.length) {
        written -= b.length;
        continue;
      }
      next.push(written > 0 ? b.subarray(written) : b);
      written = 0;
    }
    rest = next;
  }
}

/** An empty file in `tmp/`, open for writing. */
export interface TmpFile {
  readonly fd: number;
  readonly path: string;
  /** Opened `O_SYNC`: each write is durable when it returns. */
  readonly synced: boolean;
}

/** Throw an unused file away. */
async function discard(file: TmpFile): Promise<void> {
  await closeFd(file.fd).catch(() => {});
  await unlink(file.path).catch(() => {});
}

/**
 * A few empty files opened ahead in one directory, so a durable write starts
 * with its write. Taking one starts opening a replacement; when none is ready
 * (a burst), `take` opens one itself.
 */
export class TmpFilePool {
  readonly #dir: string;
  readonly #flags: number;
  readonly #size: number;
  readonly #tag = randomBytes(4).toString('hex');
  readonly #ready: TmpFile[] = [];
  readonly #opening = new Set<Promise<void>>();
  #seq = 0;
  #closed = false;

  /** `sync`: open `O_SYNC`. `size`: files kept open ahead (0: open each on demand). */
  constructor(dir: string, opts: { readonly sync: boolean; readonly size: number }) {
    this.#dir = dir;
    this.#flags = O_WRONLY | O_CREAT | O_EXCL | (opts.sync ? O_SYNC : 0);
    this.#size = opts.size;
  }

  /** An open, empty file of this pool's directory; the caller commits or discards it. */
  take(): Promise<TmpFile> {
    const file = this.#ready.pop();
    this.#refill();
    return file ? Promise.resolve(file) : this.#open();
  }

  #refill(): void {
    while (!this.#closed && this.#ready.length + this.#opening.size < this.#size) {
      const opening: Promise<void> = this.#open().then(
        (file) => {
          this.#opening.delete(opening);
          if (this.#closed) return discard(file);
          this.#ready.push(file);
        },
        // A failure here shows again, with its cause, when a write opens its own file.
        () => {
          this.#opening.delete(opening);
        },
      );
      this.#opening.add(opening);
    }
  }

  async #open(): Promise<TmpFile> {
    const path = join(this.#dir, `${this.#tag}.${(this.#seq++).toString(36)}.tmp`);
    const fd = await openFd(path, this.#flags);
    return { fd, path, synced: (this.#flags & O_SYNC) !== 0 };
  }

  /** Close and remove the files opened ahead. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#opening]);
    await Promise.all(this.#ready.splice(0).map(discard));
  }
}

/**
 * Give `file` the content `buffers`, make it durable (when `sync`) and rename
 * it to `path`. On failure the file is closed and removed.
 */
export async function commitTmpFile(
  file: TmpFile,
  path: string,
  buffers: readonly Buffer[],
  sync: boolean,
): Promise<void> {
  try {
    await writevAll(file.fd, buffers);
    if (sync && !file.synced) await fsyncFd(file.fd);
  } catch (err) {
    await discard(file);
    throw err;
  }
  if (sync) {
    // Durable already: the close cannot lose anything, so it need not be waited for.
    closeFd(file.fd).catch(() => {});
  } else {
    // Without fsync a failed close may be the only report of a failed write.
    try {
      await closeFd(file.fd);
    } catch (err) {
      await unlink(file.path).catch(() => {});
      throw err;
    }
  }
  try {
    await rename(file.path, path);
  } catch (err) {
    await unlink(file.path).catch(() => {});
    throw err;
  }
}
