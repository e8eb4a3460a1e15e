/**
 * The load generator's client side of one SMTP connection: a raw socket and a
 * minimal reply counter. It never looks at reply text: a reply is complete at
 * the CRLF of a line whose fourth octet is not `-` (RFC 5321 4.2.1), and only
 * its three-digit code is kept.
 */
import { connect, type Socket } from 'node:net';

const LF = 10;
const DIGIT_0 = 48;
const HYPHEN = 45;

/** Raised when the peer closes or the socket fails while replies are awaited. */
export class ConnectionLost extends Error {
  constructor(reason: string) {
    super(`connection lost: ${reason}`);
    this.name = 'ConnectionLost';
  }
}

export class SmtpConn {
  readonly socket: Socket;
  /** True once the socket closed (for any reason). */
  closed = false;
  /** What the connection is waiting for (for error reports). */
  waitingFor = 'greeting';
  #closeReason = 'closed by peer';
  /** Codes of complete replies not yet handed to a waiter. */
  #codes: number[] = [];
  #want = 0;
  #resolve: ((codes: number[]) => void) | undefined;
  #reject: ((err: Error) => void) | undefined;
  // Head of the line being read: how many octets seen, its code so far, its fourth octet.
  #pos = 0;
  #code = 0;
  #sep = 0;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#feed(chunk));
    socket.on('error', (err) => {
      this.#closeReason = (err as NodeJS.ErrnoException).code ?? err.message;
    });
    socket.on('close', () => {
      this.closed = true;
      const reject = this.#reject;
      this.#resolve = undefined;
      this.#reject = undefined;
      reject?.(new ConnectionLost(this.#closeReason));
    });
  }

  /** Connect and wait for the greeting; resolves with the connection and the greeting's code. */
  static open(host: string, port: number, timeoutMs = 10_000): Promise<{ conn: SmtpConn; greeting: number }> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ConnectionLost('connect timeout'));
      }, timeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        reject(new ConnectionLost((err as NodeJS.ErrnoException).code ?? err.message));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        const conn = new SmtpConn(socket);
        conn.expect(1).then(
          ([code]) => {
            clearTimeout(timer);
            resolve({ conn, greeting: code ?? 0 });
          },
          (err: Error) => {
            clearTimeout(timer);
            reject(err);
          },
        );
      });
    });
  }

  /** Send bytes (one write). */
  write(data: Buffer): boolean {
    return this.socket.write(data);
  }

  /** Resolve once the socket's buffer drained (immediately when it is not full). */
  drained(): Promise<void> {
    if (!this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onClose = () => reject(new ConnectionLost(this.#closeReason));
      this.socket.once('close', onClose);
      this.socket.once('drain', () => {
        this.socket.off('close', onClose);
        resolve();
      });
    });
  }

  /** Wait for the next `n` complete replies and give their codes. */
  expect(n: number): Promise<number[]> {
    if (this.#codes.length >= n) return Promise.resolve(this.#take(n));
    if (this.closed) return Promise.reject(new ConnectionLost(this.#closeReason));
    return new Promise((resolve, reject) => {
      this.#want = n;
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  /** Send QUIT, wait for its reply, then close; throws ConnectionLost if no reply came. */
  async quit(): Promise<void> {
    if (this.closed) return;
    this.waitingFor = 'QUIT';
    this.write(QUIT);
    try {
      await this.expect(1);
    } finally {
      this.socket.destroy();
    }
  }

  /** Close now; a pending `expect` fails with `reason`. */
  destroy(reason = 'closed by the client'): void {
    if (!this.closed) this.#closeReason = reason;
    this.socket.destroy();
  }

  #take(n: number): number[] {
    if (n === this.#codes.length) {
      const all = this.#codes;
      this.#codes = [];
      return all;
    }
    return this.#codes.splice(0, n);
  }

  #feed(chunk: Buffer): void {
    const len = chunk.length;
    let i = 0;
    while (i < len) {
      // The first four octets of a line: three digits and the separator.
      while (this.#pos < 4 && i < len) {
        const b = chunk[i] as number;
        if (b === LF) break;
        if (this.#pos < 3) this.#code = this.#code * 10 + (b - DIGIT_0);
        else this.#sep = b;
        this.#pos++;
        i++;
      }
      if (i >= len) return;
      const nl = chunk.indexOf(LF, i);
      if (nl === -1) return;
      if (this.#sep !== HYPHEN) this.#reply(this.#code >= 100 && this.#code < 600 ? this.#code : 0);
      this.#pos = 0;
      this.#code = 0;
      this.#sep = 0;
      i = nl + 1;
    }
  }

  #reply(code: number): void {
    this.#codes.push(code);
    if (this.#resolve && this.#codes.length >= this.#want) {
      const resolve = this.#resolve;
      this.#resolve = undefined;
      this.#reject = undefined;
      resolve(this.#take(this.#want));
    }
  }
}

const QUIT = Buffer.from('QUIT\r\n');
