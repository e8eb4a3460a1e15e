/**
 * Reads SMTP/LMTP replies (RFC 5321 4.2) off the bytes a server sends:
 * multi-line replies (`250-...` then `250 ...`), the RFC 3463 enhanced status
 * code in the text (RFC 2034), across chunk boundaries. Lenient about a bare
 * LF line ending; strict about everything that could make a reply ambiguous.
 */
import { StringDecoder } from 'node:string_decoder';

/** One complete reply from the remote server. */
export interface RemoteReply {
  readonly code: number;
  /** Enhanced status code (`class.subject.detail`) when every line's text started with one of the code's class. */
  readonly enhanced: string | undefined;
  /** The text of each line, without the code and the enhanced code. */
  readonly lines: readonly string[];
}

/** Raised when the server sends something that is not a reply. */
export class ReplySyntaxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReplySyntaxError';
  }
}

export interface ReplyReaderLimits {
  /** Octets of one reply line before it counts as a protocol error (RFC 5321 4.5.3.1.5 says 512). */
  readonly maxLineLength?: number;
  /** Lines of one multi-line reply (EHLO answers are the longest). */
  readonly maxLines?: number;
}

const LINE = /^([2-5]\d\d)([ -]?)(.*)$/s;
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)/;

/** Incremental reply parser: `push` bytes, take complete replies. */
export class ReplyReader {
  readonly #maxLineLength: number;
  readonly #maxLines: number;
  #decoder = new StringDecoder('utf8');
  #partial = '';
  #pending: Array<{ code: number; text: string }> = [];

  constructor(limits: ReplyReaderLimits = {}) {
    this.#maxLineLength = limits.maxLineLength ?? 4096;
    this.#maxLines = limits.maxLines ?? 256;
  }

  /** Feed bytes; returns the replies they completed, in order. Throws `ReplySyntaxError`. */
  push(chunk: Buffer | string): RemoteReply[] {
    const out: RemoteReply[] = [];
    let data = this.#partial + (typeof chunk === 'string' ? chunk : this.#decoder.write(chunk));
    for (;;) {
      const lf = data.indexOf('\n');
      if (lf < 0) break;
      const line = data.slice(0, lf > 0 && data.charCodeAt(lf - 1) === 13 ? lf - 1 : lf);
      data = data.slice(lf + 1);
      const reply = this.#line(line);
      if (reply) out.push(reply);
    }
    if (data.length > this.#maxLineLength) throw new ReplySyntaxError('reply line too long');
    this.#partial = data;
    return out;
  }

  /** Whether a reply has started but not finished (bytes or lines held back). */
  get midReply(): boolean {
    return this.#partial.length > 0 || this.#pending.length > 0;
  }

  /** Forget everything buffered (after STARTTLS: nothing sent before the handshake may be trusted). */
  reset(): void {
    this.#decoder = new StringDecoder('utf8');
    this.#partial = '';
    this.#pending = [];
  }

  #line(line: string): RemoteReply | undefined {
    if (line.length > this.#maxLineLength) throw new ReplySyntaxError('reply line too long');
    const m = LINE.exec(line);
    if (!m) throw new ReplySyntaxError('malformed reply line');
    const code = Number(m[1]);
    const sep = m[2] as string;
    const text = m[3] as string;
    if (sep === '' && text !== '') throw new ReplySyntaxError('malformed reply line');
    const first = this.#pending[0];
    if (first && first.code !== code)
      throw new ReplySyntaxError('reply code changed inside a multi-line reply');
    this.#pending.push({ code, text });
    if (this.#pending.length > this.#maxLines) throw new ReplySyntaxError('too many reply lines');
    if (sep === '-') return undefined;
    const lines = this.#pending;
    this.#pending = [];
    return buildReply(
      code,
      lines.map((l) => l.text),
    );
  }
}

/** Split the enhanced status codes off the lines (only when every line has one of the right class). */
export function buildReply(code: number, texts: readonly string[]): RemoteReply {
  const klass = String(code)[0];
  const matches = texts.map((t) => ENHANCED.exec(t));
  const all = matches.every((m) => m !== null && m[1] === klass);
  if (!all) return { code, enhanced: undefined, lines: texts };
  const last = matches[matches.length - 1] as RegExpExecArray;
  return {
    code,
    enhanced: `${last[1]}.${Number(last[2])}.${Number(last[3])}`,
    lines: texts.map((t, i) => t.slice((matches[i] as RegExpExecArray)[0].length)),
  };
}

/** One line of printable text for reports and logs: control characters dropped, length capped. */
export function replyText(reply: RemoteReply, max = 400): string {
  const joined = reply.lines
    .join(' ')
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .trim();
  return joined.length > max ? `${joined.slice(0, max - 3)}...` : joined;
}
