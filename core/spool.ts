/**
 * Where message data goes while it arrives. Small messages stay in memory;
 * once a message passes `memoryLimit` octets it spills to a file in the spool
 * directory, so memory stays bounded whatever the message size.
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { open, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { HeaderField, Message } from './types.ts';

export const DEFAULT_MEMORY_LIMIT = 256 * 1024;

export class SpoolWriter {
  readonly #dir: string;
  readonly #name: string;
  readonly #memoryLimit: number;
  #chunks: Buffer[] = [];
  #size = 0;
  #file: WriteStream | undefined;
  #path: string | undefined;
  #failed: Error | undefined;
  /** Callers waiting for the spool file to drain (see `onDrain`). */
  #drainWaiters: Array<() => void> = [];

  constructor(dir: string, name: string, memoryLimit = DEFAULT_MEMORY_LIMIT) {
    this.#dir = dir;
    this.#name = name;
    this.#memoryLimit = memoryLimit;
  }

  get size(): number {
    return this.#size;
  }

  /**
   * Append data; false means "pause the source until `drain`". After a write
   * failure it is always true: the source reads on (the data is dropped) so
   * that the message can end and be answered (`finish` rejects).
   */
  write(chunk: Buffer): boolean {
    this.#size += chunk.length;
    if (this.#failed) return true;
    if (this.#file) return this.#file.write(chunk) || this.#failed !== undefined;
    this.#chunks.push(chunk);
    if (this.#size <= this.#memoryLimit) return true;
    this.#path = join(this.#dir, `${this.#name}.spool`);
    const file = createWriteStream(this.#path, { flags: 'wx', mode: 0o600 });
    file.on('error', (err) => this.#fail(err));
    file.on('drain', () => this.#releaseWaiters());
    // No 'drain' comes after end() or destroy(): the last chunk of a message may be the one that filled the buffer.
    file.on('close', () => this.#releaseWaiters());
    this.#file = file;
    const pending = this.#chunks;
    this.#chunks = [];
    let ok = true;
    for (const c of pending) ok = file.write(c);
    return ok;
  }

  #fail(err: Error): void {
    this.#failed ??= err;
    this.#releaseWaiters();
  }

  #releaseWaiters(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const fn of waiters) fn();
  }

  /** Call `fn` once the spool file has drained, or failed (only meaningful after `write` returned false). */
  onDrain(fn: () => void): void {
    const file = this.#file;
    if (!file || this.#failed || file.closed || !file.writableNeedDrain) {
      queueMicrotask(fn);
      return;
    }
    this.#drainWaiters.push(fn);
  }

  /**
   * Close the spool and give the message: at once when it stayed in memory,
   * else once the spool file is written. Rejects if writing the spool failed
   * (e.g. disk full).
   */
  finish(
    prepended: readonly HeaderField[],
    hadBareLineEndings: boolean,
  ): SpooledMessage | Promise<SpooledMessage> {
    const file = this.#file;
    if (this.#failed) return Promise.reject(this.#failed);
    if (!file) return new SpooledMessage(prepended, this.#size, hadBareLineEndings, { chunks: this.#chunks });
    return new Promise<void>((resolve, reject) => {
      file.once('error', reject);
      file.end(() => resolve());
    }).then(() => {
      if (this.#failed) throw this.#failed;
      return new SpooledMessage(prepended, this.#size, hadBareLineEndings, { path: this.#path as string });
    });
  }

  /** Throw the data away (rejected or aborted transaction). */
  async discard(): Promise<void> {
    this.#chunks = [];
    const file = this.#file;
    if (!file || !this.#path) return;
    const path = this.#path;
    this.#file = undefined;
    await new Promise<void>((resolve) => {
      if (file.closed) return resolve();
      file.once('close', () => resolve());
      file.destroy();
    });
    await rm(path, { force: true });
  }
}

type Body = { readonly chunks: readonly Buffer[] } | { readonly path: string };

export class SpooledMessage implements Message {
  #prepended: readonly HeaderField[];
  readonly size: number;
  readonly hadBareLineEndings: boolean;
  readonly #body: Body;
  #head: Buffer | undefined;

  constructor(prepended: readonly HeaderField[], size: number, hadBareLineEndings: boolean, body: Body) {
    this.#prepended = prepended;
    this.size = size;
    this.hadBareLineEndings = hadBareLineEndings;
    this.#body = body;
  }

  get prepended(): readonly HeaderField[] {
    return this.#prepended;
  }

  prepend(fields: readonly HeaderField[]): void {
    if (fields.length === 0) return;
    this.#prepended = [...fields, ...this.#prepended];
    this.#head = undefined;
  }

  /** The prepended header block, CRLF-terminated. */
  get head(): Buffer {
    if (!this.#head) {
      this.#head = Buffer.from(this.prepended.length ? `${this.prepended.join('\r\n')}\r\n` : '', 'utf8');
    }
    return this.#head;
  }

  /** Path of the spool file holding the received data (without prepended headers), if it spilled to disk. */
  get spoolPath(): string | undefined {
    return 'path' in this.#body ? this.#body.path : undefined;
  }

  stream(): Readable {
    const head = this.head;
    const body = this.#body;
    if ('chunks' in body) return Readable.from([head, ...body.chunks], { objectMode: false });
    return Readable.from(
      (async function* () {
        yield head;
        yield* createReadStream(body.path);
      })(),
      { objectMode: false },
    );
  }

  read(maxBytes = 16 * 1024 * 1024): Promise<Buffer> {
    const total = this.head.length + this.size;
    if (total > maxBytes)
      return Promise.reject(new RangeError(`message of ${total} octets is larger than ${maxBytes}`));
    const body = this.#body;
    if ('chunks' in body) return Promise.resolve(Buffer.concat([this.head, ...body.chunks], total));
    return (async () => {
      const parts: Buffer[] = [this.head];
      for await (const c of createReadStream(body.path)) parts.push(c as Buffer);
      return Buffer.concat(parts, total);
    })();
  }

  async saveTo(path: string, opts: { fsync?: boolean } = {}): Promise<void> {
    const fh = await open(path, 'wx', 0o600);
    try {
      if ('chunks' in this.#body) {
        await fh.writev([this.head, ...this.#body.chunks]);
      } else {
        await fh.write(this.head);
        for await (const c of createReadStream(this.#body.path)) await fh.write(c as Buffer);
      }
      if (opts.fsync !== false) await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(path).catch(() => {});
      throw err;
    }
    await fh.close();
  }

  /** Remove the spool file, if any (nothing to wait for when the message stayed in memory). */
  dispose(): Promise<void> | undefined {
    if ('path' in this.#body) return rm(this.#body.path, { force: true });
    return undefined;
  }
}
