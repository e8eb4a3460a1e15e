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

/** Header sections are bounded by `limits.maxHeaderSize` long before this; a guard, not a limit. */
const MAX_HEADER_SECTION = 64 * 1024 * 1024;

export class SpooledMessage implements Message {
  #prepended: readonly HeaderField[];
  /** Octets received. */
  readonly #received: number;
  readonly hadBareLineEndings: boolean;
  readonly #body: Body;
  #head: Buffer | undefined;
  /**
   * After `removeFields`: the received header section without the removed
   * fields, standing in for the first `#skip` octets of the received data.
   */
  #section: Buffer | undefined;
  #skip = 0;

  constructor(prepended: readonly HeaderField[], size: number, hadBareLineEndings: boolean, body: Body) {
    this.#prepended = prepended;
    this.#received = size;
    this.hadBareLineEndings = hadBareLineEndings;
    this.#body = body;
  }

  /** Octets of the received data, without prepended fields and without fields `removeFields` took out. */
  get size(): number {
    return this.#received - this.#skip + (this.#section?.length ?? 0);
  }

  /**
   * Take header fields out of the received header section: every field for
   * which `remove(name, field)` is true (`name` in lower case, `field` the
   * whole field as received, folded lines and all, without the final CRLF).
   * Reads only the header section; the body is not touched. Streams opened
   * afterwards, `read`, `saveTo` and `size` reflect it. Returns how many
   * fields were removed.
   */
  async removeFields(remove: (name: string, field: string) => boolean): Promise<number> {
    const section = this.#section ?? (await this.#receivedSection());
    if (section === undefined) return 0;
    const text = section.toString('latin1');
    let kept = '';
    let removed = 0;
    for (const field of splitFields(text)) {
      const colon = field.indexOf(':');
      const name = colon > 0 ? field.slice(0, colon).trim().toLowerCase() : '';
      if (name !== '' && remove(name, Buffer.from(field, 'latin1').toString('utf8'))) removed++;
      else kept += `${field}\r\n`;
    }
    if (removed === 0) return 0;
    if (this.#section === undefined) this.#skip = section.length;
    this.#section = Buffer.from(kept, 'latin1');
    return removed;
  }

  /** The received header section (fields with their CRLF, no empty line), or undefined when there is none. */
  async #receivedSection(): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let size = 0;
    const source: AsyncIterable<Buffer> | Iterable<Buffer> =
      'chunks' in this.#body ? this.#body.chunks : createReadStream(this.#body.path);
    let all = Buffer.alloc(0);
    try {
      for await (const chunk of source) {
        parts.push(chunk);
        size += chunk.length;
        all = Buffer.concat(parts, size);
        parts.length = 0;
        parts.push(all);
        if (all.length >= 2 && all[0] === 13 && all[1] === 10) return undefined;
        const end = all.indexOf('\r\n\r\n');
        if (end >= 0) return all.subarray(0, end + 2);
        if (size > MAX_HEADER_SECTION) return undefined;
      }
    } finally {
      if (!('chunks' in this.#body)) (source as ReturnType<typeof createReadStream>).destroy();
    }
    // All header, no body: the section runs to the end (cut after its last CRLF).
    const eol = all.lastIndexOf('\r\n');
    return eol < 0 ? undefined : all.subarray(0, eol + 2);
  }

  /** The received data, after `removeFields`, as buffers (in memory) or a file range. */
  #data():
    | { readonly chunks: readonly Buffer[] }
    | { readonly path: string; readonly start: number; readonly lead: readonly Buffer[] } {
    const lead = this.#section === undefined ? [] : [this.#section];
    if ('path' in this.#body) return { path: this.#body.path, start: this.#skip, lead };
    if (this.#skip === 0) return { chunks: this.#body.chunks };
    const out: Buffer[] = [...lead];
    let skip = this.#skip;
    for (const c of this.#body.chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      out.push(skip > 0 ? c.subarray(skip) : c);
      skip = 0;
    }
    return { chunks: out };
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
    const data = this.#data();
    if ('chunks' in data) return Readable.from([head, ...data.chunks], { objectMode: false });
    return Readable.from(
      (async function* () {
        yield head;
        yield* data.lead;
        yield* createReadStream(data.path, { start: data.start });
      })(),
      { objectMode: false },
    );
  }

  readNow(maxBytes = 16 * 1024 * 1024): Buffer | undefined {
    const total = this.head.length + this.size;
    if (total > maxBytes) return undefined;
    const data = this.#data();
    return 'chunks' in data ? Buffer.concat([this.head, ...data.chunks], total) : undefined;
  }

  read(maxBytes = 16 * 1024 * 1024): Promise<Buffer> {
    const total = this.head.length + this.size;
    if (total > maxBytes)
      return Promise.reject(new RangeError(`message of ${total} octets is larger than ${maxBytes}`));
    const data = this.#data();
    if ('chunks' in data) return Promise.resolve(Buffer.concat([this.head, ...data.chunks], total));
    return (async () => {
      const parts: Buffer[] = [this.head, ...data.lead];
      for await (const c of createReadStream(data.path, { start: data.start })) parts.push(c as Buffer);
      return Buffer.concat(parts, total);
    })();
  }

  async saveTo(path: string, opts: { fsync?: boolean } = {}): Promise<void> {
    const fh = await open(path, 'wx', 0o600);
    try {
      const data = this.#data();
      if ('chunks' in data) {
        await fh.writev([this.head, ...data.chunks]);
      } else {
        await fh.writev([this.head, ...data.lead]);
        for await (const c of createReadStream(data.path, { start: data.start })) await fh.write(c as Buffer);
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

/** The fields of a header section (latin1 text), each without its final CRLF. */
function splitFields(section: string): string[] {
  return section.replace(/\r\n$/, '').split(/\r\n(?![ \t])/);
}
