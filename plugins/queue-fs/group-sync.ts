/**
 * Group commit for directory fsyncs. A rename is durable only once its
 * directory is fsynced; when many transactions finish at once, one fsync can
 * cover all their renames. A caller whose rename happened while an fsync was
 * already running waits for the next one (the running one may have started
 * before the rename), and every caller waiting at that point shares it.
 *
 * Changes that need not be durable before anyone answers (removals: a crash
 * that undoes one re-delivers the message, within the at-least-once promise)
 * call `syncSoon`: the next fsync anyone starts covers them, and a timer makes
 * one if none has by then.
 */
import { type FileHandle, open } from 'node:fs/promises';

interface Waiters {
  readonly promise: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

function waiters(): Waiters {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

export class DirSync {
  readonly path: string;
  #fh: FileHandle | undefined;
  #running: Promise<void> | undefined;
  #next: Waiters | undefined;
  /** fsyncs started; the number of the last one that succeeded. */
  #started = 0;
  #covered = 0;
  /** `#started` when the last change waiting for `syncSoon` was made. */
  #lastChange = -1;
  #soon: NodeJS.Timeout | undefined;
  /** fsync calls made, and sync requests they covered (for benchmarks). */
  readonly counters = { fsyncs: 0, requests: 0 };

  constructor(path: string) {
    this.path = path;
  }

  /** Resolves once an fsync of the directory that started after this call has completed. */
  sync(): Promise<void> {
    this.counters.requests++;
    this.#next ??= waiters();
    const mine = this.#next.promise;
    if (!this.#running) this.#run();
    return mine;
  }

  /** Make the changes made so far durable within about `delayMs`, without waiting for it. */
  syncSoon(delayMs = 1000): void {
    this.#lastChange = this.#started;
    if (this.#soon) return;
    this.#soon = setTimeout(() => {
      this.#soon = undefined;
      if (!this.#isCovered()) this.sync().catch(() => {});
    }, delayMs);
    this.#soon.unref();
  }

  /** Whether an fsync that started after the last `syncSoon` change has succeeded. */
  #isCovered(): boolean {
    return this.#covered > this.#lastChange;
  }

  #run(): void {
    const batch = this.#next;
    if (!batch) return;
    this.#next = undefined;
    this.counters.fsyncs++;
    const n = ++this.#started;
    this.#running = (async () => {
      this.#fh ??= await open(this.path, 'r');
      await this.#fh.sync();
    })().then(
      () => {
        this.#covered = Math.max(this.#covered, n);
        this.#finish(batch);
      },
      (err) => this.#finish(batch, err),
    );
  }

  #finish(batch: Waiters, err?: unknown): void {
    this.#running = undefined;
    if (err === undefined) batch.resolve();
    else batch.reject(err);
    if (this.#next) this.#run();
  }

  /** Flush what `syncSoon` left waiting, then release the directory. */
  async close(): Promise<void> {
    clearTimeout(this.#soon);
    this.#soon = undefined;
    if (this.#lastChange >= 0 && !this.#isCovered()) await this.sync().catch(() => {});
    while (this.#running) await this.#running;
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
  }
}
