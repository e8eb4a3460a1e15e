/**
 * Prebuilt wire bytes for the load generator: the envelope commands and a
 * message of a given size, already terminated by `CRLF.CRLF`. Small messages
 * are one Buffer (one write); large ones are a repeated chunk of whole lines,
 * so a 200 MB message never sits in the client's memory.
 */

/** Above this, a message is streamed from a repeated chunk instead of being one Buffer. */
export const STREAM_THRESHOLD = 8 * 1024 * 1024;

const LINE = 76; // octets of text per body line, CRLF not counted
const CHUNK_LINES = Math.floor((1024 * 1024) / (LINE + 2));

export interface Envelope {
  /** `MAIL`, every `RCPT` and `DATA` in one Buffer (pipelined). */
  readonly pipelined: Buffer;
  /** The same commands, one Buffer each, in order. */
  readonly steps: readonly Buffer[];
  readonly rcpts: number;
}

export function buildEnvelope(rcpts: number, domain = 'example.com'): Envelope {
  const steps = [Buffer.from('MAIL FROM:<loadgen@bench.example>\r\n')];
  for (let i = 0; i < rcpts; i++) steps.push(Buffer.from(`RCPT TO:<user${i + 1}@${domain}>\r\n`));
  steps.push(Buffer.from('DATA\r\n'));
  return { pipelined: Buffer.concat(steps), steps, rcpts };
}

function headerBlock(size: number): string {
  return [
    'From: Load Generator <loadgen@bench.example>',
    'To: user1@example.com',
    `Subject: mailframe bench message of ${size} octets`,
    'Date: Thu, 1 Jan 2026 00:00:00 +0000',
    'Message-ID: <bench@bench.example>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    '',
  ].join('\r\n');
}

/** A body line of `n` printable octets that never starts with a dot. */
function textLine(n: number, seed: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ';
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[(seed * 7 + i * 13) % alphabet.length];
  return s;
}

/** Body lines filling exactly `octets` (>= 3), each line CRLF-terminated. */
function bodyLines(octets: number): string {
  const lines: string[] = [];
  let left = octets;
  while (left > 0) {
    let n = Math.min(LINE, left - 2);
    // Never leave 1 or 2 octets: a line needs at least one character and its CRLF.
    if (left - (n + 2) > 0 && left - (n + 2) < 3) n = left - 5;
    lines.push(textLine(n, lines.length));
    left -= n + 2;
  }
  return `${lines.join('\r\n')}\r\n`;
}

export interface MessageData {
  /** Octets of the message (what a server stores), the terminating `.CRLF` not counted. */
  readonly size: number;
  /** The whole DATA payload with its terminator, for small messages. */
  readonly buffer: Buffer | undefined;
  /** For large messages: the head, a chunk repeated `repeat` times, and the tail (with the terminator). */
  readonly stream:
    | { readonly head: Buffer; readonly chunk: Buffer; readonly repeat: number; readonly tail: Buffer }
    | undefined;
}

/** A message of about `size` octets (exact for small ones), headers included. */
export function buildMessage(size: number): MessageData {
  const head = headerBlock(size);
  const terminator = '.\r\n';
  if (size <= STREAM_THRESHOLD) {
    const text = head + bodyLines(Math.max(3, size - head.length));
    return { size: text.length, buffer: Buffer.from(text + terminator, 'latin1'), stream: undefined };
  }
  const chunk = Buffer.from(bodyLines(CHUNK_LINES * (LINE + 2)), 'latin1');
  const repeat = Math.floor((size - head.length) / chunk.length);
  const tailText = bodyLines(Math.max(3, size - head.length - repeat * chunk.length));
  const headBuf = Buffer.from(head, 'latin1');
  const tail = Buffer.from(tailText + terminator, 'latin1');
  return {
    size: headBuf.length + repeat * chunk.length + tailText.length,
    buffer: undefined,
    stream: { head: headBuf, chunk, repeat, tail },
  };
}
