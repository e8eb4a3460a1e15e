/**
 * Command-mode line framing (RFC 5321 2.3.8, 4.5.3.1.4).
 *
 * Received chunks are kept as a list and only concatenated when a line spans
 * chunks. Each byte is scanned at most twice: once backwards by `push` (to
 * know whether the buffer ends in a partial line) and once forwards by `next`.
 *
 * Memory bound: when `next` is asked for a line and the buffer holds only a
 * partial line of `maxLength` octets or more, that partial line is dropped and
 * the reader discards input up to the next LF, then reports one `too-long`
 * event. From then on `push` drops the bytes itself, so a client that never
 * sends LF keeps `buffered` below `maxLength` as long as the owner calls `next`
 * after each `push` (which command mode does anyway). Bytes are never dropped
 * while complete lines are pending, so a BDAT chunk pipelined behind its
 * command line survives intact for `take`.
 */

export type LineEvent = { readonly kind: 'line'; readonly line: string } | { readonly kind: 'too-long' };

const LF = 0x0a;
const CR = 0x0d;
const EMPTY: Buffer = Buffer.alloc(0);
const TOO_LONG: LineEvent = Object.freeze({ kind: 'too-long' });

export class LineReader {
  /** Unread chunks; the first one is read from `#offset`. */
  #chunks: Buffer[] = [];
  #offset = 0;
  /** Unread octets. */
  #total = 0;
  /** Unread octets after the last LF (the partial line at the end). */
  #tail = 0;
  /** Dropping input until the next LF. */
  #discarding = false;
  /** A `too-long` event is due before any buffered line. */
  #tooLong = false;
  #maxLength = 0;
  #lastOctets = 0;
  #lastBare = false;

  /** @param maxLength maximum octets of a line including its CRLF. */
  constructor(maxLength: number) {
    this.maxLength = maxLength;
  }

  /** Maximum octets of a line including its CRLF; may be changed at any time. */
  get maxLength(): number {
    return this.#maxLength;
  }
  set maxLength(value: number) {
    if (!(value >= 2)) throw new RangeError(`LineReader maxLength must be at least 2, got ${value}`);
    this.#maxLength = value;
  }

  /** Octets of the last line `next` returned, its line ending included. */
  get lastOctets(): number {
    return this.#lastOctets;
  }

  /** Whether the last line `next` returned ended in a bare LF rather than CRLF. */
  get lastBare(): boolean {
    return this.#lastBare;
  }

  /** Unread octets. */
  get buffered(): number {
    return this.#total;
  }

  /** A complete line or a `too-long` event is ready for `next`. */
  get hasLine(): boolean {
    return this.#tooLong || this.#tail < this.#total;
  }

  /** Append received bytes. The reader keeps a reference to `chunk`; don't reuse it. */
  push(chunk: Buffer): void {
    if (this.#discarding) {
      const lf = chunk.indexOf(LF);
      if (lf === -1) return;
      this.#discarding = false;
      this.#tooLong = true;
      chunk = chunk.subarray(lf + 1);
    }
    const n = chunk.length;
    if (n === 0) return;
    const last = chunk.lastIndexOf(LF);
    this.#tail = last === -1 ? this.#tail + n : n - last - 1;
    this.#total += n;
    this.#chunks.push(chunk);
  }

  /** The next complete line (without CR LF, decoded as UTF-8), a `too-long` event, or `undefined`. */
  next(): LineEvent | undefined {
    if (this.#tooLong) {
      this.#tooLong = false;
      return TOO_LONG;
    }
    if (this.#tail === this.#total) {
      if (!this.#discarding && this.#total >= this.#maxLength) {
        // The partial line can only end beyond the limit: drop it and skip to its LF.
        this.clear();
        this.#discarding = true;
      }
      return undefined;
    }
    const chunks = this.#chunks;
    const first = chunks[0]!;
    const start = this.#offset;
    const lf = first.indexOf(LF, start);
    if (lf !== -1) {
      const length = lf + 1 - start;
      this.#total -= length;
      if (lf + 1 === first.length) {
        chunks.shift();
        this.#offset = 0;
      } else {
        this.#offset = lf + 1;
      }
      if (length > this.#maxLength) return TOO_LONG;
      const end = lf > start && first[lf - 1] === CR ? lf - 1 : lf;
      this.#lastOctets = length;
      this.#lastBare = end === lf;
      return { kind: 'line', line: first.toString('utf8', start, end) };
    }
    return this.#spanningLine();
  }

  /** A line that starts in the first chunk and ends in a later one. */
  #spanningLine(): LineEvent {
    const chunks = this.#chunks;
    const first = chunks[0]!;
    let length = first.length - this.#offset;
    let k = 1;
    let lf = -1;
    for (;;) {
      const chunk = chunks[k]!;
      lf = chunk.indexOf(LF);
      if (lf !== -1) break;
      length += chunk.length;
      k++;
    }
    length += lf + 1;
    let event = TOO_LONG;
    if (length <= this.#maxLength) {
      const line = Buffer.allocUnsafe(length - 1);
      let at = first.copy(line, 0, this.#offset);
      for (let j = 1; j < k; j++) at += chunks[j]!.copy(line, at);
      chunks[k]!.copy(line, at, 0, lf);
      const end = length > 1 && line[length - 2] === CR ? length - 2 : length - 1;
      this.#lastOctets = length;
      this.#lastBare = end === length - 1;
      event = { kind: 'line', line: line.toString('utf8', 0, end) };
    }
    this.#total -= length;
    const last = chunks[k]!;
    if (lf + 1 === last.length) {
      chunks.splice(0, k + 1);
      this.#offset = 0;
    } else {
      chunks.splice(0, k);
      this.#offset = lf + 1;
    }
    return event;
  }

  /** Remove and return all unread bytes (for switching to DATA/BDAT raw mode). */
  take(): Buffer {
    const chunks = this.#chunks;
    let out = EMPTY;
    if (chunks.length === 1) {
      out = this.#offset === 0 ? chunks[0]! : chunks[0]!.subarray(this.#offset);
    } else if (chunks.length > 1) {
      chunks[0] = chunks[0]!.subarray(this.#offset);
      out = Buffer.concat(chunks, this.#total);
    }
    this.clear();
    return out;
  }

  /** Discard all buffered input and any pending `too-long` state (STARTTLS injection defence). */
  clear(): void {
    this.#chunks = [];
    this.#offset = 0;
    this.#total = 0;
    this.#tail = 0;
    this.#discarding = false;
    this.#tooLong = false;
  }
}
