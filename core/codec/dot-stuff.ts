/**
 * Outbound DATA encoding (RFC 5321 4.5.2): doubles a dot that starts a line and
 * appends the `.CRLF` terminator, incrementally and across chunk boundaries.
 *
 * Bare CR and bare LF are normalised to CR LF on the way out, so the receiver
 * sees exactly the lines this encoder stuffed: a lone LF followed by `.` can
 * never be taken for a line start (or an end of data) by a lax peer.
 *
 * Output is slices of the input plus shared constants for the inserted bytes.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { LineEndScanner } from './line-end.ts';

const LF = 0x0a;
const DOT = 0x2e;
const DOT_BUF: Buffer = Buffer.from('.');
const LF_BUF: Buffer = Buffer.from('\n');
const CRLF: Buffer = Buffer.from('\r\n');
const DOT_CRLF: Buffer = Buffer.from('.\r\n');
const LF_DOT_CRLF: Buffer = Buffer.from('\n.\r\n');
const CRLF_DOT_CRLF: Buffer = Buffer.from('\r\n.\r\n');

/** At the start of the message or after a line ending. */
const LINE_START = 0;
/** Inside a line. */
const TEXT = 1;
/** The previous chunk ended with a CR (already passed on). */
const AFTER_CR = 2;

export class DotStuffer {
  readonly #scan = new LineEndScanner();
  #state = LINE_START;

  /** Encode the next piece of the message; returns the buffers to send, in order. */
  write(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    const n = chunk.length;
    if (n === 0) return out;
    let state = this.#state;
    let i = 0;
    let start = 0;
    if (state === AFTER_CR) {
      if (chunk[0] === LF) i = 1;
      else out.push(LF_BUF);
      state = LINE_START;
    }
    const scan = this.#scan;
    scan.reset();
    while (i < n) {
      if (state === LINE_START) {
        if (chunk[i] === DOT) {
          if (i > start) out.push(chunk.subarray(start, i));
          out.push(DOT_BUF);
          start = i;
        }
        state = TEXT;
      }
      const p = scan.find(chunk, i, n);
      if (p === n) {
        i = n;
      } else if (chunk[p] === LF) {
        // Bare LF: send CR LF instead.
        if (p > start) out.push(chunk.subarray(start, p));
        out.push(CRLF);
        i = start = p + 1;
        state = LINE_START;
      } else if (p + 1 === n) {
        i = n;
        state = AFTER_CR;
      } else if (chunk[p + 1] === LF) {
        i = p + 2;
        state = LINE_START;
      } else {
        // Bare CR: keep it and add the LF.
        out.push(chunk.subarray(start, p + 1));
        out.push(LF_BUF);
        i = start = p + 1;
        state = LINE_START;
      }
    }
    if (start < n) out.push(start === 0 ? chunk : chunk.subarray(start));
    this.#state = state;
    return out;
  }

  /** The terminator, preceded by whatever completes the last line. Resets for the next message. */
  end(): Buffer {
    const state = this.#state;
    this.#state = LINE_START;
    if (state === LINE_START) return DOT_CRLF;
    return state === AFTER_CR ? LF_DOT_CRLF : CRLF_DOT_CRLF;
  }
}

/** Transform stream: message bytes in, dot-stuffed DATA with the terminator out. */
export function dotStuff(): Transform {
  const stuffer = new DotStuffer();
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
      for (const piece of stuffer.write(chunk)) this.push(piece);
      callback();
    },
    flush(callback: TransformCallback): void {
      callback(null, stuffer.end());
    },
  });
}
