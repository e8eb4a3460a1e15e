/**
 * The DATA-phase decoder (RFC 5321 4.1.1.4, 4.5.2): finds the end of data,
 * removes dot-stuffing and normalises line endings, incrementally and across
 * arbitrary chunk boundaries.
 *
 * Security (SMTP smuggling): the only end of data is `CR LF . CR LF` whose first
 * CR LF ends the last line, or `. CR LF` at the very start. A bare CR or bare LF
 * never ends a line for the purpose of finding the end or unstuffing; it is
 * emitted as CR LF and flagged, so the decoded message only contains CR LF line
 * endings and every line boundary downstream sees is one this decoder also saw.
 *
 * Output is emitted as `subarray` slices of the input, cut only where a dot is
 * removed or a line ending is normalised; the inserted CR LF is a shared
 * constant. Emitted buffers are never written to afterwards.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { LineEndScanner } from './line-end.ts';

export interface DataDecoderOptions {
  /**
   * Receives the decoded message bytes in order, mostly as slices of the input.
   * Consumers may keep them: the decoder never mutates a buffer it has emitted
   * (and the caller must not reuse a buffer passed to `write`).
   */
  readonly onData: (chunk: Buffer) => void;
  /**
   * Stop emitting once `size` would exceed this (the first `maxSize` octets are
   * still emitted), but keep counting and scanning for the end. `Infinity` = no limit.
   */
  readonly maxSize: number;
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF: Buffer = Buffer.from('\r\n');

/** At the start of the data or after a real CR LF: a dot here is stuffing or the terminator. */
const LINE_START = 0;
/** Inside a line (also right after a bare CR or LF). */
const TEXT = 1;
/** A CR ended the previous chunk; the next byte decides whether it was bare. */
const CR_PENDING = 2;
/** A line-start dot ended the previous chunk (it has been dropped). */
const DOT_SEEN = 3;
/** A line-start dot and a CR ended the previous chunk: LF next means the end. */
const DOT_CR = 4;
const DONE = 5;

export class DataDecoder {
  readonly #scan = new LineEndScanner();
  readonly #onData: (chunk: Buffer) => void;
  readonly #maxSize: number;
  #state = LINE_START;
  #size = 0;
  #overflow = false;
  #bare = false;

  constructor(opts: DataDecoderOptions) {
    this.#onData = opts.onData;
    this.#maxSize = opts.maxSize;
  }

  /** Decoded octets (after unstuffing and normalisation), counted even past `maxSize`. */
  get size(): number {
    return this.#size;
  }
  /** `size` exceeded `maxSize`; nothing more is emitted. */
  get overflow(): boolean {
    return this.#overflow;
  }
  /** A bare CR or bare LF was seen (and normalised to CR LF). */
  get bareLineEndings(): boolean {
    return this.#bare;
  }
  /** The end-of-data sequence has been seen. */
  get done(): boolean {
    return this.#state === DONE;
  }

  /**
   * Feed bytes received after the 354 reply. Returns -1 while the end of data
   * has not been seen, else the offset in `chunk` just after the terminating
   * `CR LF . CR LF`; the bytes from there on belong to the next command. Once
   * done, every further call returns 0 (none of its bytes is message data).
   */
  write(chunk: Buffer): number {
    let state = this.#state;
    if (state === DONE) return 0;
    const n = chunk.length;
    if (n === 0) return -1;
    let i = 0;
    let start = 0;

    // Resolve what the previous chunk left undecided.
    if (state === CR_PENDING) {
      this.#emit(CRLF, 0, 2);
      if (chunk[0] === LF) {
        i = start = 1;
        state = LINE_START;
      } else {
        this.#bare = true;
        state = TEXT;
      }
    } else if (state === DOT_CR) {
      if (chunk[0] === LF) {
        this.#state = DONE;
        return 1;
      }
      this.#emit(CRLF, 0, 2);
      this.#bare = true;
      state = TEXT;
    }
    const scan = this.#scan;
    scan.reset();
    while (i < n) {
      if (state === TEXT) {
        const p = scan.find(chunk, i, n);
        if (p === n) {
          i = n;
        } else if (chunk[p] === LF) {
          // Bare LF.
          this.#emit(chunk, start, p);
          this.#emit(CRLF, 0, 2);
          this.#bare = true;
          i = start = p + 1;
        } else if (p + 1 === n) {
          this.#emit(chunk, start, p);
          i = start = n;
          state = CR_PENDING;
        } else if (chunk[p + 1] === LF) {
          i = p + 2;
          state = LINE_START;
        } else {
          // Bare CR.
          this.#emit(chunk, start, p);
          this.#emit(CRLF, 0, 2);
          this.#bare = true;
          i = start = p + 1;
        }
      } else if (state === LINE_START) {
        if (chunk[i] === DOT) {
          this.#emit(chunk, start, i);
          i = start = i + 1;
          state = DOT_SEEN;
        } else {
          state = TEXT;
        }
      } else {
        // DOT_SEEN: the dot has been dropped and `start === i`.
        const b = chunk[i];
        if (b === CR) {
          if (i + 1 === n) {
            i = start = n;
            state = DOT_CR;
          } else if (chunk[i + 1] === LF) {
            this.#state = DONE;
            return i + 2;
          } else {
            this.#emit(CRLF, 0, 2);
            this.#bare = true;
            i = start = i + 1;
            state = TEXT;
          }
        } else if (b === LF) {
          this.#emit(CRLF, 0, 2);
          this.#bare = true;
          i = start = i + 1;
          state = TEXT;
        } else {
          state = TEXT;
        }
      }
    }
    this.#emit(chunk, start, n);
    this.#state = state;
    return -1;
  }

  #emit(buf: Buffer, from: number, to: number): void {
    const length = to - from;
    if (length === 0) return;
    const size = this.#size + length;
    if (!this.#overflow) {
      if (size <= this.#maxSize) {
        this.#onData(from === 0 && to === buf.length ? buf : buf.subarray(from, to));
      } else {
        this.#overflow = true;
        const room = this.#maxSize - this.#size;
        if (room > 0) this.#onData(buf.subarray(from, from + room));
      }
    }
    this.#size = size;
  }
}

/**
 * Transform stream around `DataDecoder` for use outside the session: input is
 * raw DATA bytes, output the decoded message. When the terminator is seen it
 * emits `'end-of-data'` with the rest of that chunk (`Buffer`, possibly empty)
 * and ends its readable side. Anything written after that belongs to the next
 * command too and is emitted as `'trailing'` (`Buffer`); unpipe the source in
 * the `'end-of-data'` listener. If the input ends before the terminator, the
 * stream fails with an error.
 */
export class DataDecoderStream extends Transform {
  readonly decoder: DataDecoder;

  constructor(opts: { maxSize?: number } = {}) {
    super();
    this.decoder = new DataDecoder({
      onData: (chunk) => {
        this.push(chunk);
      },
      maxSize: opts.maxSize ?? Number.POSITIVE_INFINITY,
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.decoder.done) {
      this.emit('trailing', chunk);
      callback();
      return;
    }
    const end = this.decoder.write(chunk);
    if (end !== -1) {
      this.emit('end-of-data', chunk.subarray(end));
      this.push(null);
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.decoder.done) callback();
    else callback(new Error('DATA input ended before the CRLF.CRLF terminator'));
  }
}
