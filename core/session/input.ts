/**
 * Socket input for one session: received octets go to the line reader in
 * command mode (and from there, one line at a time, to command dispatch) or
 * to message reception in data and raw mode. Pipelined lines are processed
 * until input runs out or a command goes async; reading pauses while too
 * much unprocessed input piles up or the spool is full.
 */
import type { Socket } from 'node:net';
import { type LineEvent, LineReader } from '../codec/line-reader.ts';
import { describe } from '../errors.ts';
import { Replies } from '../reply.ts';
import { runCommand } from './commands.ts';
import type { SmtpSession } from './session.ts';

const INPUT = Symbol('mailframe.session-input');
type OwnedSocket = Socket & { [INPUT]?: SessionInput | undefined };

/** Pause reading when this much unprocessed pipelined input piles up. */
const MAX_PIPELINED_INPUT = 64 * 1024;

export class SessionInput {
  readonly #session: SmtpSession;
  /** Command-mode framing; message reception takes what is left of it when data starts. */
  readonly lines: LineReader;
  #paused = false;
  /** Held by message reception while the spool file drains. */
  #held = false;
  /** A verb handler waiting for its next line (AUTH continuations). */
  #lineWaiter: ((line: string | undefined) => void) | undefined;
  /** Octets the waiting handler's lines may have. */
  #waiterLimit = 0;
  /** The client half-closed: answer what already arrived, then close. */
  #ended = false;

  /**
   * Socket listeners shared by every session (the socket points at its
   * input): no closures per connection, which matters with 10,000 idle ones.
   */
  static readonly #listeners: ReadonlyArray<[string, (this: OwnedSocket, arg?: never) => void]> = [
    [
      'data',
      function (this: OwnedSocket, chunk?: Buffer) {
        const input = this[INPUT];
        if (input) input.#receive(chunk as Buffer);
      },
    ],
    [
      'end',
      function (this: OwnedSocket) {
        const input = this[INPUT];
        if (input) input.#end();
      },
    ],
    [
      'error',
      function (this: OwnedSocket, err?: Error) {
        const input = this[INPUT];
        // Node leaves a socket open after some errors (a refused TLS renegotiation, say): end it here.
        if (input) input.#session.debug({ err: (err as Error).message }, 'socket error');
        this.destroy();
      },
    ],
    [
      'close',
      function (this: OwnedSocket) {
        const input = this[INPUT];
        if (input) input.#session.finalize();
      },
    ],
  ];

  constructor(session: SmtpSession, maxLineLength: number) {
    this.#session = session;
    this.lines = new LineReader(maxLineLength);
  }

  attach(socket: Socket): void {
    socket.setNoDelay(true);
    (socket as OwnedSocket)[INPUT] = this;
    for (const [event, fn] of SessionInput.#listeners) socket.on(event, fn);
  }

  detach(socket: Socket): void {
    for (const [event, fn] of SessionInput.#listeners) socket.off(event, fn);
    (socket as OwnedSocket)[INPUT] = undefined;
  }

  /** The client half-closed its side. */
  get ended(): boolean {
    return this.#ended;
  }

  /** A verb handler is waiting in `readLine`. */
  get waitingForLine(): boolean {
    return this.#lineWaiter !== undefined;
  }

  #receive(chunk: Buffer): void {
    const s = this.#session;
    if (s.state === 'closed') return;
    s.deadlines.received(chunk.length);
    if (s.state === 'data') {
      s.message.receiveData(chunk);
      return;
    }
    if (s.state === 'raw') {
      s.message.receiveRaw(chunk);
      return;
    }
    this.lines.push(chunk);
    if (this.lines.buffered > MAX_PIPELINED_INPUT) this.pause();
    this.pump();
  }

  pause(): void {
    if (!this.#paused) {
      this.#paused = true;
      this.#session.socket.pause();
    }
  }

  resume(): void {
    if (this.#paused && !this.#held) {
      this.#paused = false;
      this.#session.socket.resume();
    }
  }

  /** Stop reading until `release` (the spool is full). */
  hold(): void {
    this.#held = true;
    this.pause();
  }

  release(): void {
    this.#held = false;
    this.resume();
  }

  get held(): boolean {
    return this.#held;
  }

  /** Process buffered command lines until input runs out or a command goes async. */
  pump(): void {
    const s = this.#session;
    // After a closing reply (QUIT, 421 too many errors ...) nothing pipelined behind it is processed.
    while (
      (!s.busy || this.#lineWaiter !== undefined) &&
      !s.output.closing &&
      s.state !== 'closed' &&
      s.state !== 'data' &&
      s.state !== 'connecting'
    ) {
      const ev = this.lines.next();
      if (!ev) break;
      if (this.#lineWaiter) {
        const w = this.#lineWaiter;
        this.#lineWaiter = undefined;
        w(this.#waitedLine(ev));
        continue;
      }
      if (ev.kind === 'too-long') {
        s.output.queue(Replies.lineTooLong);
        continue;
      }
      // RFC 5321 2.3.8, 4.1.1: a command line ends in CRLF; a bare LF is refused unless configured otherwise.
      if (this.lines.lastBare && s.host.smtp.commandBareLineFeed === 'reject') {
        s.output.queue(Replies.bareLineFeedCommand);
        continue;
      }
      const result = runCommand(s, ev.line, this.lines.lastOctets);
      if (result instanceof Promise) {
        s.busy = true;
        result.then(
          () => this.afterAsync(),
          (err) => {
            s.log.error({ err }, `command failed: ${describe(err)}`);
            s.output.queue(Replies.localError);
            this.afterAsync();
          },
        );
        break;
      }
    }
    if (!s.busy && s.state !== 'data') {
      if (this.lines.buffered < MAX_PIPELINED_INPUT / 2) this.resume();
      s.output.flush();
      this.stopIfStarved();
    }
  }

  /** A command or message completion that went async has finished: carry on with the input. */
  afterAsync(): void {
    const s = this.#session;
    s.busy = false;
    if (s.state === 'closed') {
      // The client left while a command was in progress: end what it left open.
      if (s.transaction) void s.resetTransaction('disconnect').catch(() => {});
      return;
    }
    if (s.state === 'data') {
      s.output.flush();
      const rest = this.lines.take();
      if (rest.length > 0) s.message.receiveData(rest);
      return;
    }
    this.pump();
  }

  /**
   * The client's next line, for a verb handler (AUTH continuations); undefined
   * when it went away, `''` when it was longer than `maxOctets`.
   */
  readLine(maxOctets: number): Promise<string | undefined> {
    const s = this.#session;
    if (s.state === 'closed') return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.#waiterLimit = maxOctets;
      const ev = this.lines.next();
      if (ev) return resolve(this.#waitedLine(ev));
      if (this.#ended) return resolve(undefined);
      this.#lineWaiter = resolve;
      s.output.flush();
      this.resume();
    });
  }

  /** A line for a waiting handler: `''` for one too long. */
  #waitedLine(ev: LineEvent): string {
    return ev.kind === 'line' && this.lines.lastOctets <= this.#waiterLimit ? ev.line : '';
  }

  /** The connection closed: a verb handler waiting for a line gets undefined. */
  cancelLineWait(): void {
    const w = this.#lineWaiter;
    if (w) {
      this.#lineWaiter = undefined;
      w(undefined);
    }
  }

  /**
   * The client ended its side (the listener allows half-open sockets): what it
   * sent before still gets processed and answered, then the session closes.
   */
  #end(): void {
    const s = this.#session;
    if (s.state === 'closed') return;
    s.debug({}, 'client closed its side of the connection');
    this.#ended = true;
    this.stopIfStarved();
  }

  /** After the client's input ended: close once nothing buffered can make progress. */
  stopIfStarved(): void {
    const s = this.#session;
    if (!this.#ended || s.state === 'closed') return;
    // A message or chunk that is still incomplete can never be completed now.
    if (s.state === 'data' || s.state === 'raw') {
      s.close();
      return;
    }
    if (s.busy || s.state === 'connecting' || this.lines.hasLine) return;
    s.output.flush();
    s.close();
  }
}
