/**
 * Group commit for directory fsyncs. A rename is durable only once its
 * directory is fsynced; when many transactions finish at once, one fsync can
 * cover all their renames. A caller whose rename happened while an fsync was
 * already running waits for the next one (the running one may have started
 * before the rename), and every caller waiting at that point shares it.
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

  #run(): void {
    const batch = this.#next;
    if (!batch) return;
    this.#next = undefined;
    this.counters.fsyncs++;
    this.#running = (async () => {
      this.#fh ??= await open(this.path, 'r');
      await this.#fh.sync();
    })().then(
      () => this.#finish(batch),
      (err) => this.#finish(batch, err),
    );
  }

  #finish(batch: Waiters, err?: unknown): void {
    this.#running = undefined;
    if (err === undefined) batch.resolve();
    else batch.reject(err);
    if (this.#next) this.#run();
  }

  async close(): Promise<void> {
    while (this.#running) await this.#running;
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
  }
}
