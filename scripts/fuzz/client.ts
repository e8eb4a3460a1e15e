/**
 * Plays a fuzz session against the server over loopback and reports whether
 * the server kept its side of the bargain: after the client's last byte (and
 * a QUIT) the server must answer and close within a bound, whatever state the
 * session was left in. Also the health check: a fresh, valid transaction that
 * must complete while the fuzzing goes on.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Session } from './session.ts';

export interface Bounds {
  /** How long a `reply` step waits before moving on (not a fault by itself). */
  readonly replyWaitMs: number;
  /** How long the server has, after the client's last byte and QUIT, to close the connection. */
  readonly closeWaitMs: number;
}

export interface SessionOutcome {
  /** Complete replies received. */
  readonly replies: number;
  /** Set when the server neither closed nor answered within the bound: a hang. */
  readonly hang?: string;
  /** A line the server sent that is text but not an RFC 5321 reply line (or breaks a multi-line reply). */
  readonly malformed?: string;
}

/** Printable text (with an optional CR before the LF); anything else is taken for TLS records. */
const TEXT_LINE = /^[\x20-\x7e\t]*\r?$/;
/** RFC 5321 4.2: Reply-code [ ("-" / SP) textstring ] CRLF. */
const REPLY_LINE = /^[2-5][0-9][0-9](?:[ -][\x20-\x7e\t]*)?\r$/;

/** A connection whose transport may be upgraded to TLS; counts complete replies. */
class Conn {
  socket: Socket;
  closed = false;
  replies = 0;
  /** Octets received, kept only as a short tail for reports. */
  tail = '';
  /** The first text line that is not a well-formed reply line. */
  malformed: string | undefined;
  /** Lines are checked until the first binary one (TLS records after STARTTLS, which the client may ignore). */
  #checking = true;
  /** The code of the multi-line reply in progress. */
  #continuing: string | undefined;
  #partial = '';
  #waiters = new Set<() => void>();

  constructor(socket: Socket) {
    this.socket = socket;
    this.#watch(socket);
  }

  #watch(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => {
      if (socket !== this.socket) return;
      const text = chunk.toString('latin1');
      this.tail = (this.tail + text).slice(-400);
      const lines = (this.#partial + text).split('\n');
      this.#partial = (lines.pop() ?? '').slice(-1000);
      for (const l of lines) {
        if (/^\d{3}(?: |\r?$)/.test(l)) this.replies++;
        this.#check(l);
      }
      this.#wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (socket === this.socket) {
        this.closed = true;
        this.#wake();
      }
    });
  }

  #check(l: string): void {
    if (!this.#checking) return;
    if (!TEXT_LINE.test(l)) {
      this.#checking = false;
      return;
    }
    const code = l.slice(0, 3);
    if (!REPLY_LINE.test(l) || (this.#continuing !== undefined && code !== this.#continuing)) {
      this.malformed ??= l;
    }
    this.#continuing = l.charAt(3) === '-' ? code : undefined;
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }

  /** Resolves when `done()` holds, the connection closed, or `ms` passed; true unless it timed out. */
  until(done: () => boolean, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (done() || this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => {
        if (done() || this.closed || signal?.aborted) finish(true);
      };
      const timer = setTimeout(() => finish(false), ms);
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        signal?.removeEventListener('abort', check);
        resolve(ok);
      };
      this.#waiters.add(check);
      signal?.addEventListener('abort', check);
    });
  }

  /** Write `data`; false when the server did not read it within `ms` (the socket keeps it buffered). */
  async send(data: Buffer, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (this.closed) return true;
    if (this.socket.write(data) || ms === 0) return true;
    let drained = false;
    this.socket.once('drain', () => {
      drained = true;
      this.#wake();
    });
    // The server may stop reading (it is entitled to); its timeouts then close the connection.
    return this.until(() => drained, ms, signal);
  }

  async startTls(ms: number): Promise<void> {
    if (this.closed) return;
    const raw = this.socket;
    const secure = tlsConnect({ socket: raw, rejectUnauthorized: false, servername: 'localhost' });
    this.socket = secure;
    this.#partial = '';
    this.#continuing = undefined;
    this.#watch(secure);
    raw.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    let ready = false;
    secure.once('secureConnect', () => {
      ready = true;
      this.#wake();
    });
    await this.until(() => ready, ms);
    if (!ready) secure.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function open(host: string, port: number): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    socket.once('connect', () => resolve(new Conn(socket)));
    socket.once('error', reject);
  });
}

/** Play `session`; a failure to connect at all is reported as a hang (the server stopped accepting). */
export async function runSession(
  session: Session,
  host: string,
  port: number,
  bounds: Bounds,
  signal?: AbortSignal,
): Promise<SessionOutcome> {
  let conn: Conn;
  try {
    conn = await open(host, port);
  } catch (err) {
    return { replies: 0, hang: `cannot connect to ${host}:${port}: ${(err as Error).message}` };
  }
  const onAbort = () => conn.destroy();
  signal?.addEventListener('abort', onAbort);
  try {
    let expected = 0;
    // A server that stopped answering (or reading) is waited for once, not once per remaining step:
    // its own timeouts end the session, and the close wait below judges that.
    let replyWait = bounds.replyWaitMs;
    let drainWait = bounds.closeWaitMs;
    const deadline = Date.now() + bounds.closeWaitMs;
    for (const step of session.steps) {
      if (conn.closed || signal?.aborted || Date.now() > deadline) break;
      if (step.op === 'send') {
        if (!(await conn.send(step.data, drainWait, signal))) drainWait = 0;
      } else if (step.op === 'tls') await conn.startTls(bounds.replyWaitMs * 2);
      else if (step.op === 'reply') {
        expected++;
        if (!(await conn.until(() => conn.replies >= expected, replyWait, signal))) {
          expected = conn.replies;
          replyWait = Math.min(replyWait, 200);
        } else replyWait = bounds.replyWaitMs;
      } else {
        if (step.how === 'destroy') conn.destroy();
        else conn.socket.end();
        break;
      }
    }
    if (!conn.closed && !signal?.aborted && conn.socket.writable) conn.socket.write('QUIT\r\n');
    const closed = await conn.until(() => false, bounds.closeWaitMs, signal);
    if (!closed && !signal?.aborted) {
      return {
        replies: conn.replies,
        hang: `the connection was still open ${bounds.closeWaitMs} ms after the session's last step (and QUIT); last octets received: ${JSON.stringify(conn.tail.slice(-200))}`,
      };
    }
    return conn.malformed === undefined
      ? { replies: conn.replies }
      : { replies: conn.replies, malformed: conn.malformed };
  } finally {
    signal?.removeEventListener('abort', onAbort);
    conn.destroy();
  }
}

/**
 * One valid transaction on a fresh connection: every reply must come within
 * `ms` and be the expected one. Returns a description of what went wrong.
 */
export async function healthCheck(host: string, port: number, ms: number): Promise<string | undefined> {
  let conn: Conn;
  try {
    conn = await open(host, port);
  } catch (err) {
    return `cannot connect: ${(err as Error).message}`;
  }
  const script: [string | undefined, string][] = [
    [undefined, '220'],
    ['EHLO health.example\r\n', '250'],
    ['MAIL FROM:<health@example.com>\r\n', '250'],
    ['RCPT TO:<postmaster@localhost>\r\n', '250'],
    ['DATA\r\n', '354'],
    ['Subject: health\r\n\r\nhealth check\r\n.\r\n', '250'],
    ['QUIT\r\n', '221'],
  ];
  try {
    let seen = 0;
    for (const [send, code] of script) {
      if (send !== undefined) conn.socket.write(send);
      seen++;
      if (!(await conn.until(() => conn.replies >= seen, ms)) || conn.replies < seen) {
        return `no reply to ${JSON.stringify(send ?? 'the greeting')} within ${ms} ms (received ${JSON.stringify(conn.tail)})`;
      }
      const last = conn.tail.trimEnd().split('\n').pop() ?? '';
      if (!last.startsWith(code))
        return `expected ${code} to ${JSON.stringify(send ?? 'the greeting')}, got ${JSON.stringify(last)}`;
    }
    return undefined;
  } finally {
    conn.destroy();
  }
}
