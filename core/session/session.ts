/**
 * The SMTP session (RFC 5321): one instance per connection. This file holds
 * what a plugin sees of a connection (`Session`) and its life cycle: greeting,
 * transactions opened and reset, timeout, close. The machinery sits beside it,
 * one job per file:
 *
 *   input.ts        socket input: line framing, pipelining pump, pause/resume
 *   deadlines.ts    how long the client may take (command and data timeouts)
 *   output.ts       reply batching: one write per pipelined group
 *   commands.ts     command dispatch: the core verbs and registered ones
 *   message.ts      message reception: DATA decoder, BDAT seam, spool, queue
 *   tls-upgrade.ts  STARTTLS and implicit TLS
 */

import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { callBail, type Hooks } from '../hooks.ts';
import type { IdleSweep } from '../idle-sweep.ts';
import type { Observers } from '../observers.ts';
import type { Limits, VerbContext } from '../plugin.ts';
import { normaliseIp } from '../proxy-protocol.ts';
import type { Registry } from '../registry.ts';
import { isPositive, Replies, type Reply, reply } from '../reply.ts';
import { SmtpTransaction } from '../transaction.ts';
import type { Endpoint, Helo, ListenerInfo, Session, SessionNotes, TlsInfo } from '../types.ts';
import { Deadlines } from './deadlines.ts';
import { SessionInput } from './input.ts';
import { MessageReceiver } from './message.ts';
import { ReplyOutput } from './output.ts';
import { upgradeToTls } from './tls-upgrade.ts';

/** What a session needs from its server. */
export interface SessionHost {
  readonly hooks: Hooks;
  readonly registry: Registry;
  /** Who watches sessions (see `observers.ts`): call sites test the event's field. */
  readonly observers: Observers;
  readonly hostname: string;
  readonly limits: Readonly<Limits>;
  readonly timeouts: Readonly<{ command: number; data: number; greetingDelay: number; minDataRate: number }>;
  readonly smtp: Readonly<{
    banner: string;
    bareLineEndings: 'normalize' | 'reject';
    commandBareLineFeed: 'reject' | 'accept';
    rejectEarlyTalkers: boolean;
  }>;
  readonly spoolDir: string;
  readonly now: () => number;
  /** The coarse clock and sweep that enforce `timeouts` (see `idle-sweep.ts`). */
  readonly idle: IdleSweep;
  nextId(): string;
  /** True once graceful shutdown began. */
  readonly draining: boolean;
  /** Counters the sessions update (messages queued and refused, their octets). */
  readonly traffic: { messages: number; bytes: number; refused: number };
  /** The connection is closed and the disconnect hook ran. */
  sessionClosed(session: SmtpSession): void;
}

/**
 * How input is read, and where the dialogue stands: `connecting` until the
 * greeting is queued, `command` (lines), `data` (the DATA decoder), `raw`
 * (counted BDAT octets), `rejected` (a 554 greeting: only QUIT), `closed`.
 */
export type SessionState = 'connecting' | 'command' | 'data' | 'raw' | 'rejected' | 'closed';

/**
 * One connection. The fields after the `Session` ones are the core's own
 * (the files of `core/session/` share them); plugins see only `Session`.
 */
export class SmtpSession implements Session {
  readonly id: string;
  readonly listener: ListenerInfo;
  remote: Endpoint;
  readonly local: Endpoint;
  readonly hostname: string;
  readonly #connectedAt: number;
  notes: SessionNotes = {};
  helo: Helo | undefined;
  tls: TlsInfo | undefined;
  user: string | undefined;
  transaction: SmtpTransaction | undefined;
  transactionCount = 0;
  enhancedStatusCodes = false;
  /** The last command verb read (upper case): what replies answer, for observers. */
  verb: string | undefined;

  readonly host: SessionHost;
  /** The connection's socket: the plain one, or the TLS one after an upgrade. */
  socket: Socket;
  state: SessionState = 'connecting';
  /** A command, hook or message completion is in progress; input waits. */
  busy = false;
  readonly input: SessionInput;
  readonly output: ReplyOutput;
  readonly deadlines: Deadlines;
  #message: MessageReceiver | undefined;
  /** RCPTs refused for `limits.maxRecipients` so far (see `limits.recipientOvershoot`). */
  recipientsOverLimit = 0;
  /** Set while a TLS handshake is in progress: a timeout fails it. */
  handshakeTimeout: (() => void) | undefined;
  readonly #baseLog: Logger;
  #log: Logger | undefined;
  #txSeq = 0;
  #finalized = false;
  #closedWaiters: Array<() => void> | undefined;

  constructor(
    host: SessionHost,
    socket: Socket,
    listener: ListenerInfo,
    log: Logger,
    proxied?: { readonly remote: Endpoint | undefined; readonly local: Endpoint | undefined },
  ) {
    this.host = host;
    this.socket = socket;
    this.id = host.nextId();
    this.listener = listener;
    this.remote = proxied?.remote ?? {
      address: normaliseIp(socket.remoteAddress ?? ''),
      port: socket.remotePort ?? 0,
    };
    this.local = proxied?.local ?? {
      address: normaliseIp(socket.localAddress ?? ''),
      port: socket.localPort ?? 0,
    };
    this.hostname = host.hostname;
    this.#connectedAt = host.now();
    this.#baseLog = log;
    this.deadlines = new Deadlines(host.idle, host.timeouts.minDataRate);
    this.output = new ReplyOutput(this);
    this.input = new SessionInput(this, host.registry.longestLine(host.limits.maxLineLength));
    this.input.attach(socket);
    if (proxied) socket.resume();
  }

  /** The 503 for a command that needs the greeting first: LHLO on an LMTP listener, else EHLO/HELO. */
  get helloFirst(): Reply {
    return this.listener.protocol === 'lmtp' ? Replies.needLhlo : Replies.needHelo;
  }

  get connectedAt(): Date {
    return new Date(this.#connectedAt);
  }

  /** Resolves once the connection is closed and the disconnect hook ran. */
  get closed(): Promise<void> {
    if (this.#finalized) return Promise.resolve();
    return new Promise((resolve) => {
      this.#closedWaiters ??= [];
      this.#closedWaiters.push(resolve);
    });
  }

  /** A transaction or command is in progress (graceful shutdown waits for these). */
  get active(): boolean {
    return this.busy || this.transaction !== undefined || this.state === 'data' || this.state === 'raw';
  }

  /** Message reception, made when the first message starts (idle connections never need it). */
  get message(): MessageReceiver {
    this.#message ??= new MessageReceiver(this);
    return this.#message;
  }

  /** Message reception if it was ever needed. */
  get messageIfStarted(): MessageReceiver | undefined {
    return this.#message;
  }

  authenticate(user: string): void {
    this.user = user;
    this.#log = this.log.child({ user });
  }

  /** Child logger with `cid` and `remote`, made on first use (idle connections never log). */
  get log(): Logger {
    this.#log ??= this.#baseLog.child({ cid: this.id, remote: this.remote.address });
    return this.#log;
  }

  /** Debug lines without making the child logger when debug is off. */
  debug(obj: object, msg: string): void {
    if (this.#baseLog.isLevelEnabled('debug')) this.log.debug(obj, msg);
  }

  /** Whether `level` is logged (to skip building a summary line nobody reads). */
  logs(level: 'info' | 'debug'): boolean {
    return this.#baseLog.isLevelEnabled(level);
  }

  /** Implicit TLS (port 465): handshake before the greeting. */
  startTls(options: Parameters<VerbContext['upgradeToTls']>[0]): Promise<TlsInfo> {
    return upgradeToTls(this, options);
  }

  /** Run the connect hook and greet. */
  async start(): Promise<void> {
    this.busy = true;
    this.deadlines.armCommand(this.host.timeouts.command);
    if (this.host.timeouts.greetingDelay > 0) {
      await new Promise((r) => setTimeout(r, this.host.timeouts.greetingDelay));
      if (this.state === 'closed') return;
      if (this.input.lines.buffered > 0 && this.host.smtp.rejectEarlyTalkers) {
        this.log.info('early talker rejected');
        return this.output.sendNow(Replies.earlyTalker);
      }
    }
    await this.#greet();
    this.busy = false;
    this.input.pump();
  }

  /** Run the connect hook and queue the greeting (or the refusal it decided). */
  async #greet(): Promise<void> {
    const verdict = await callBail(this.host.hooks, 'connect', this);
    if (this.state === 'closed') return;
    if (verdict && !isPositive(verdict)) {
      this.log.info({ code: verdict.code }, 'connection refused by policy');
      if (verdict.disconnect || verdict.code === 421) return this.output.sendNow(verdict);
      // A transient verdict (also a failing plugin's 451) must not refuse for good: 421 and close (RFC 5321 3.1).
      if (verdict.code < 500)
        return this.output.sendNow(reply(421, verdict.enhanced ?? '4.3.0', verdict.text, true));
      // RFC 5321 3.1: after a 554 greeting, wait for QUIT and answer 503 to anything else.
      this.state = 'rejected';
      this.output.queue(verdict.code === 554 ? verdict : reply(554, '5.7.1', verdict.text));
    } else {
      this.state = 'command';
      this.output.queue(reply(220, undefined, `${this.hostname} ${this.host.smtp.banner}`));
    }
  }

  /**
   * Start over as if `remote` had connected (XCLIENT from a trusted proxy):
   * the session is reset, the connect hook runs again and a new greeting goes out.
   */
  async reconnectAs(remote: Endpoint): Promise<void> {
    if (this.transaction) await this.resetTransaction('rset');
    this.remote = remote;
    this.forgetClient();
    this.#log = undefined;
    await this.#greet();
  }

  /** Graceful shutdown: 421 now if idle, else after the current transaction. */
  drain(): void {
    if (this.state === 'closed') return;
    if (!this.active) {
      this.verb = undefined;
      this.output.sendNow(Replies.shuttingDown);
    }
  }

  /** Hard stop at the end of the grace period. */
  abort(): void {
    if (this.state === 'closed') return;
    this.verb = undefined;
    this.output.sendNow(Replies.shuttingDown);
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /**
   * Forget what the client told us (after a TLS upgrade, RFC 3207 4.2): its
   * EHLO, the identity it authenticated as, and what plugins noted about it.
   */
  forgetClient(): void {
    this.helo = undefined;
    if (this.user !== undefined) {
      this.user = undefined;
      this.#log = undefined;
    }
    this.enhancedStatusCodes = false;
    this.notes = {};
  }

  // ---- transactions -----------------------------------------------------

  openTransaction(): SmtpTransaction {
    this.#txSeq++;
    return new SmtpTransaction(
      this,
      this.#txSeq === 1 ? this.id : `${this.id}.${this.#txSeq}`,
      this.host.now(),
    );
  }

  /** End the open transaction without queueing it: drop an open chunked message, fire `reset`. */
  async resetTransaction(why: 'rset' | 'rejected' | 'disconnect', size?: number): Promise<void> {
    const tx = this.transaction;
    this.transaction = undefined;
    const observe = this.host.observers.transaction;
    if (tx && observe) observe(tx, size === undefined ? { outcome: why } : { outcome: why, size });
    if (this.#message?.chunkedOpen) await this.#message.abortChunked();
    if (tx && this.host.hooks.reset.isUsed()) await this.host.hooks.reset.promise(tx);
  }

  // ---- timeout and close --------------------------------------------------

  /** Called by the server's idle sweep: time out when the client has been silent too long. */
  checkIdle(now: number): void {
    if (this.deadlines.expired(now) && this.state !== 'closed') this.#timeout();
  }

  #timeout(): void {
    // Busy with STARTTLS, but the client owes us its handshake.
    if (this.handshakeTimeout) {
      this.handshakeTimeout();
      return;
    }
    // RFC 5321 4.5.3.2.7 times the wait for the client's next command: while the server itself is
    // busy (hooks, greeting delay) the client is waiting for us, so check again later instead.
    if (this.busy && !this.input.waitingForLine && this.state !== 'raw' && this.state !== 'closed') {
      this.deadlines.armCommand(this.host.timeouts.command);
      return;
    }
    this.log.info({ state: this.state }, 'timeout');
    this.verb = undefined;
    this.output.sendNow(Replies.timeout);
    this.socket.destroy();
  }

  /** Close after what was sent: the socket ends, input is no longer read. */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.input.lines.clear();
    this.socket.end();
    // A client that never reads must not pin the socket open.
    setTimeout(() => this.socket.destroy(), 5000).unref();
  }

  /** The socket closed: end what is open, fire `disconnect`, tell the server. */
  finalize(): void {
    this.state = 'closed';
    this.input.cancelLineWait();
    const abandoned = this.#message?.abandon();
    const tx = this.transaction;
    const done = async () => {
      // The spool file is gone before `closed` resolves (shutdown and tests rely on it).
      await abandoned?.discard();
      if (tx && !this.busy) await this.resetTransaction('disconnect');
      if (this.host.hooks.disconnect.isUsed()) await this.host.hooks.disconnect.promise(this);
    };
    done()
      .catch((err) => this.log.error({ err }, 'disconnect hooks failed'))
      .finally(() => {
        this.debug({ transactions: this.transactionCount }, 'disconnected');
        this.#finalized = true;
        this.host.sessionClosed(this);
        for (const w of this.#closedWaiters ?? []) w();
        this.#closedWaiters = undefined;
      });
  }
}
