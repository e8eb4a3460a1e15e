/**
 * A plain `net` client that keeps every `data` event as it arrived, so tests
 * can assert how the server framed its writes (one TCP read per pipelined
 * group) and compare bytes exactly.
 */
import { connect, type Socket } from 'node:net';

export class RawSocket {
  readonly socket: Socket;
  /** Every `data` event, in order, as received. */
  readonly chunks: Buffer[] = [];
  #closed = false;
  #waiters: Array<() => void> = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.#wake();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  /** Connect to `host:port`, from `localAddress` when given (e.g. another loopback address). */
  static async connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawSocket> {
    const socket = connect({ port, host, ...(localAddress === undefined ? {} : { localAddress }) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.setNoDelay(true);
    return new RawSocket(socket);
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const fn of w) fn();
  }

  async #until(ready: () => boolean, what: () => string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (this.#closed) throw new Error(`connection closed while waiting for ${what()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Everything received so far, as text. */
  get text(): string {
    return Buffer.concat(this.chunks).toString('latin1');
  }

  /** Text of the data events from index `from` on. */
  since(from: number): string {
    return Buffer.concat(this.chunks.slice(from)).toString('latin1');
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** The `index`-th data event (0-based), waiting for it to arrive. */
  async chunk(index: number, timeoutMs = 5000): Promise<Buffer> {
    await this.#until(
      () => this.chunks.length > index,
      () => `data event #${index} (have ${JSON.stringify(this.text)})`,
      timeoutMs,
    );
    return this.chunks[index] as Buffer;
  }

  /** Wait until the text received since data event `from` holds `n` complete replies; returns that text. */
  async replies(n: number, from = 0, timeoutMs = 5000): Promise<string> {
    const since = () => this.since(from);
    await this.#until(
      () => splitReplies(since()).length >= n,
      () => `${n} replies (have ${JSON.stringify(since())})`,
      timeoutMs,
    );
    return since();
  }

  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('connection still open');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Split reply text into complete replies (each possibly multi-line, CRLF included). */
export function splitReplies(text: string): string[] {
  const out: string[] = [];
  let current = '';
  let pos = 0;
  for (;;) {
    const eol = text.indexOf('\r\n', pos);
    if (eol < 0) break;
    const line = text.slice(pos, eol + 2);
    pos = eol + 2;
    current += line;
    if (line.length < 4 || line[3] !== '-') {
      out.push(current);
      current = '';
    }
  }
  return out;
}
