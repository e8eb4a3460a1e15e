/**
 * The SMTP session state machine (RFC 5321): one instance per connection.
 *
 * Input is framed by the line reader in command mode and by the DATA decoder
 * in data mode. Replies to pipelined commands are batched and written once the
 * buffered input is exhausted (RFC 2920), so a pipelined group costs one write.
 */

import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { parsePath } from './address.ts';
import { parseCommand, parseParams, peekParams } from './codec/command.ts';
import { DataDecoder } from './codec/data-decoder.ts';
import { LineReader } from './codec/line-reader.ts';
import { formatReply } from './codec/reply-format.ts';
import { describe } from './errors.ts';
import { callBail, callWaterfall, type Hooks, isReply } from './hooks.ts';
import type { IdleSweep } from './idle-sweep.ts';
import type { ChunkedMessage, Limits, ParamContext, VerbContext } from './plugin.ts';
import { receivedHeader } from './received.ts';
import type { Registry } from './registry.ts';
import { isPositive, queuedReply, Replies, type Reply, reply } from './reply.ts';
import { type SpooledMessage, SpoolWriter } from './spool.ts';
import { SmtpTransaction } from './transaction.ts';
import type {
  Address,
  Endpoint,
  Helo,
  ListenerInfo,
  Params,
  RecipientAttributes,
  Session,
  SessionNotes,
  TlsInfo,
} from './types.ts';

/** What a session needs from its server. */
export interface SessionHost {
  readonly hooks: Hooks;
  readonly registry: Registry;
  readonly hostname: string;
  readonly limits: Readonly<Limits>;
  readonly timeouts: Readonly<{ command: number; data: number; greetingDelay: number }>;
  readonly smtp: Readonly<{
    banner: string;
    bareLineEndings: 'normalize' | 'reject';
    rejectEarlyTalkers: boolean;
  }>;
  readonly spoolDir: string;
  readonly now: () => number;
  /** The coarse clock and sweep that enforce `timeouts` (see `idle-sweep.ts`). */
  readonly idle: IdleSweep;
  nextId(): string;
  /** True once graceful shutdown began. */
  readonly draining: boolean;
  /** The connection is closed and the disconnect hook ran. */
  sessionClosed(session: SmtpSession): void;
}

const SESSION = Symbol('mailframe.session');
type OwnedSocket = Socket & { [SESSION]?: SmtpSession | undefined };

type State = 'connecting' | 'command' | 'data' | 'raw' | 'rejected' | 'closed';

/** Pause reading when this much unprocessed pipelined input piles up. */
const MAX_PIPELINED_INPUT = 64 * 1024;

export class SmtpSession implements Session {
  readonly id: string;
  readonly listener: ListenerInfo;
  remote: Endpoint;
  readonly local: Endpoint;
  readonly hostname: string;
  readonly #connectedAt: number;
  readonly notes: SessionNotes = {};
  helo: Helo | undefined;
  tls: TlsInfo | undefined;
  user: string | undefined;
  transaction: SmtpTransaction | undefined;
  transactionCount = 0;
  enhancedStatusCodes = false;

  readonly #host: SessionHost;
  readonly #baseLog: Logger;
  #log: Logger | undefined;
  #socket: Socket;
  #state: State = 'connecting';
  readonly #lines: LineReader;
  #out: string[] = [];
  #busy = false;
  #errors = 0;
  #paused = false;
  #txSeq = 0;
  /** Data mode. */
  #decoder: DataDecoder | undefined;
  #spool: SpoolWriter | undefined;
  #spoolPaused = false;
  /** A verb handler waiting for its next line (AUTH continuations). */
  #lineWaiter: ((line: string | undefined) => void) | undefined;
  #closeAfterFlush = false;
  #timeoutMs = -1;
  /** When the client must have been heard from (`host.idle` clock); checked by the server's sweep. */
  #idleDeadline = Number.POSITIVE_INFINITY;
  /** Set while a TLS handshake is in progress: a timeout fails it. */
  #handshakeTimeout: (() => void) | undefined;
  /** The client half-closed: answer what already arrived, then close. */
  #inputEnded = false;
  #finalized = false;
  #closedWaiters: Array<() => void> | undefined;
  /**
   * Socket listeners shared by every session (the socket points at its
   * session): no closures per connection, which matters with 10,000 idle ones.
   */
  static readonly #listeners: ReadonlyArray<[string, (this: OwnedSocket, arg?: never) => void]> = [
    [
      'data',
      function (this: OwnedSocket, chunk?: Buffer) {
        const session = this[SESSION];
        if (session) session.#receive(chunk as Buffer);
      },
    ],
    [
      'end',
      function (this: OwnedSocket) {
        const session = this[SESSION];
        if (session) session.#end();
      },
    ],
    [
      'error',
      function (this: OwnedSocket, err?: Error) {
        const session = this[SESSION];
        if (session) session.#socketError(err as Error);
      },
    ],
    [
      'close',
      function (this: OwnedSocket) {
        const session = this[SESSION];
        if (session) session.#finalize();
      },
    ],
  ];

  constructor(
    host: SessionHost,
    socket: Socket,
    listener: ListenerInfo,
    log: Logger,
    proxied?: { readonly remote: Endpoint | undefined; readonly local: Endpoint | undefined },
  ) {
    this.#host = host;
    this.#socket = socket;
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
    this.#lines = new LineReader(host.limits.maxLineLength + host.registry.extraLineLength);
    this.#attach(socket);
    if (proxied) socket.resume();
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
    return this.#busy || this.transaction !== undefined || this.#state === 'data' || this.#state === 'raw';
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
  #debug(obj: object, msg: string): void {
    if (this.#baseLog.isLevelEnabled('debug')) this.log.debug(obj, msg);
  }

  /** Implicit TLS (port 465): handshake before the greeting. */
  startTls(options: Parameters<VerbContext['upgradeToTls']>[0]): Promise<TlsInfo> {
    return this.#upgradeToTls(options);
  }

  /** Run the connect hook and greet. */
  async start(): Promise<void> {
    this.#busy = true;
    this.#armTimeout(this.#host.timeouts.command);
    if (this.#host.timeouts.greetingDelay > 0) {
      await new Promise((r) => setTimeout(r, this.#host.timeouts.greetingDelay));
      if (this.#state === 'closed') return;
      if (this.#lines.buffered > 0 && this.#host.smtp.rejectEarlyTalkers) {
        this.log.info('early talker rejected');
        return this.#sendNow(Replies.earlyTalker);
      }
    }
    await this.#greet();
    this.#busy = false;
    this.#pump();
  }

  /** Run the connect hook and queue the greeting (or the refusal it decided). */
  async #greet(): Promise<void> {
    const verdict = await callBail(this.#host.hooks, 'connect', this);
    if (this.#state === 'closed') return;
    if (verdict && !isPositive(verdict)) {
      this.log.info({ code: verdict.code }, 'connection refused by policy');
      if (verdict.disconnect || verdict.code === 421) return this.#sendNow(verdict);
      // A transient verdict (also a failing plugin's 451) must not refuse for good: 421 and close (RFC 5321 3.1).
      if (verdict.code < 500)
        return this.#sendNow(reply(421, verdict.enhanced ?? '4.3.0', verdict.text, true));
      // RFC 5321 3.1: after a 554 greeting, wait for QUIT and answer 503 to anything else.
      this.#state = 'rejected';
      this.#queueReply(verdict.code === 554 ? verdict : reply(554, '5.7.1', verdict.text));
    } else {
      this.#state = 'command';
      this.#queueReply(reply(220, undefined, `${this.hostname} ${this.#host.smtp.banner}`));
    }
  }

  /**
   * Start over as if `remote` had connected (XCLIENT from a trusted proxy):
   * the session is reset, the connect hook runs again and a new greeting goes out.
   */
  async #reconnectAs(remote: Endpoint): Promise<void> {
    if (this.transaction) await this.#resetTransaction('rset');
    this.remote = remote;
    this.#log = undefined;
    this.helo = undefined;
    this.user = undefined;
    this.enhancedStatusCodes = false;
    await this.#greet();
  }

  /** Graceful shutdown: 421 now if idle, else after the current transaction. */
  drain(): void {
    if (this.#state === 'closed') return;
    if (!this.active) this.#sendNow(Replies.shuttingDown);
  }

  /** Hard stop at the end of the grace period. */
  abort(): void {
    if (this.#state === 'closed') return;
    this.#sendNow(Replies.shuttingDown);
    setTimeout(() => this.#socket.destroy(), 1000).unref();
  }

  // ---- input ------------------------------------------------------------

  #attach(socket: Socket): void {
    socket.setNoDelay(true);
    (socket as OwnedSocket)[SESSION] = this;
    for (const [event, fn] of SmtpSession.#listeners) socket.on(event, fn);
  }

  #detach(socket: Socket): void {
    for (const [event, fn] of SmtpSession.#listeners) socket.off(event, fn);
    (socket as OwnedSocket)[SESSION] = undefined;
  }

  #receive(chunk: Buffer): void {
    if (this.#state === 'closed') return;
    this.#idleDeadline = this.#host.idle.deadline(this.#timeoutMs);
    if (this.#state === 'data') {
      this.#receiveData(chunk);
      return;
    }
    if (this.#state === 'raw') {
      this.#receiveRaw(chunk);
      return;
    }
    this.#lines.push(chunk);
    if (this.#lines.buffered > MAX_PIPELINED_INPUT) this.#pause();
    this.#pump();
  }

  /** Wait at most `ms` from now for the client (also after our own reply, see `#flush`). */
  #armTimeout(ms: number): void {
    this.#timeoutMs = ms;
    this.#idleDeadline = this.#host.idle.deadline(ms);
  }

  /** Called by the server's idle sweep: time out when the client has been silent too long. */
  checkIdle(now: number): void {
    if (now >= this.#idleDeadline && this.#state !== 'closed') this.#timeout();
  }

  #pause(): void {
    if (!this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #resume(): void {
    if (this.#paused && !this.#spoolPaused) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  /** Process buffered command lines until input runs out or a command goes async. */
  #pump(): void {
    // After a closing reply (QUIT, 421 too many errors ...) nothing pipelined behind it is processed.
    while (
      (!this.#busy || this.#lineWaiter !== undefined) &&
      !this.#closeAfterFlush &&
      this.#state !== 'closed' &&
      this.#state !== 'data' &&
      this.#state !== 'connecting'
    ) {
      const ev = this.#lines.next();
      if (!ev) break;
      if (this.#lineWaiter) {
        const w = this.#lineWaiter;
        this.#lineWaiter = undefined;
        w(ev.kind === 'line' ? ev.line : '');
        continue;
      }
      if (ev.kind === 'too-long') {
        this.#queueReply(Replies.lineTooLong);
        continue;
      }
      const result = this.#command(ev.line);
      if (result instanceof Promise) {
        this.#busy = true;
        result.then(
          () => this.#afterAsync(),
          (err) => {
            this.log.error({ err }, `command failed: ${describe(err)}`);
            this.#queueReply(Replies.localError);
            this.#afterAsync();
          },
        );
        break;
      }
    }
    if (!this.#busy && this.#state !== 'data') {
      if (this.#lines.buffered < MAX_PIPELINED_INPUT / 2) this.#resume();
      this.#flush();
      this.#stopIfStarved();
    }
  }

  #afterAsync(): void {
    this.#busy = false;
    if (this.#state === 'closed') {
      // The client left while a command was in progress: end what it left open.
      if (this.transaction) void this.#resetTransaction('disconnect').catch(() => {});
      return;
    }
    if (this.#state === 'data') {
      this.#flush();
      const rest = this.#lines.take();
      if (rest.length > 0) this.#receiveData(rest);
      return;
    }
    this.#pump();
  }

  // ---- output -----------------------------------------------------------

  #queueReply(r: Reply, enhanced = this.enhancedStatusCodes): undefined {
    if (this.#state === 'closed') return undefined;
    this.#out.push(formatReply(r, enhanced));
    // RFC 5321 3.8/4.2.2: 421 means the server is closing the channel, whoever produced it.
    // Marked before counting, so a closing reply that reaches maxErrors is not followed by a second 421.
    if (r.disconnect || r.code === 421) this.#closeAfterFlush = true;
    if (r.code >= 400) this.#countError();
    return undefined;
  }

  #countError(): void {
    this.#errors++;
    if (this.#errors >= this.#host.limits.maxErrors && !this.#closeAfterFlush) {
      this.log.info({ errors: this.#errors }, 'too many errors');
      this.#out.push(formatReply(Replies.tooManyErrors, this.enhancedStatusCodes));
      this.#closeAfterFlush = true;
    }
  }

  #flush(): void {
    if (this.#out.length > 0 && this.#state !== 'closed') {
      const text = this.#out.length === 1 ? (this.#out[0] as string) : this.#out.join('');
      this.#out = [];
      this.#socket.write(text);
      // The client's turn: its time starts when our reply goes out, not when its last line came in.
      this.#idleDeadline = this.#host.idle.deadline(this.#timeoutMs);
    }
    if (this.#closeAfterFlush) this.#close();
    else if (
      this.#host.draining &&
      !this.active &&
      this.#state !== 'connecting' &&
      this.#state !== 'closed'
    ) {
      this.#sendNow(Replies.shuttingDown);
    }
  }

  /** Send a reply immediately (out of band of pipelining) and close if it says so. */
  #sendNow(r: Reply): void {
    this.#queueReply(r);
    this.#flush();
  }

  #close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#lines.clear();
    this.#socket.end();
    // A client that never reads must not pin the socket open.
    setTimeout(() => this.#socket.destroy(), 5000).unref();
  }

  #timeout(): void {
    // Busy with STARTTLS, but the client owes us its handshake.
    if (this.#handshakeTimeout) {
      this.#handshakeTimeout();
      return;
    }
    // RFC 5321 4.5.3.2.7 times the wait for the client's next command: while the server itself is
    // busy (hooks, greeting delay) the client is waiting for us, so check again later instead.
    if (this.#busy && !this.#lineWaiter && this.#state !== 'raw' && this.#state !== 'closed') {
      this.#armTimeout(this.#host.timeouts.command);
      return;
    }
    this.log.info({ state: this.#state }, 'timeout');
    this.#sendNow(Replies.timeout);
    this.#socket.destroy();
  }

  /**
   * The client ended its side (the listener allows half-open sockets): what it
   * sent before still gets processed and answered, then the session closes.
   */
  #end(): void {
    if (this.#state === 'closed') return;
    this.#debug({}, 'client closed its side of the connection');
    this.#inputEnded = true;
    this.#stopIfStarved();
  }

  /** After the client's input ended: close once nothing buffered can make progress. */
  #stopIfStarved(): void {
    if (!this.#inputEnded || this.#state === 'closed') return;
    // A message or chunk that is still incomplete can never be completed now.
    if (this.#state === 'data' || this.#state === 'raw') {
      this.#close();
      return;
    }
    if (this.#busy || this.#state === 'connecting' || this.#lines.hasLine) return;
    this.#flush();
    this.#close();
  }

  #socketError(err: Error): void {
    this.#debug({ err: err.message }, 'socket error');
  }

  #finalize(): void {
    const wasData = this.#decoder !== undefined;
    this.#state = 'closed';
    if (this.#lineWaiter) {
      const w = this.#lineWaiter;
      this.#lineWaiter = undefined;
      w(undefined);
    }
    const abandoned = wasData ? this.#spool : this.#chunked?.spool;
    this.#decoder = undefined;
    this.#spool = undefined;
    this.#chunked = undefined;
    // A chunk still being read can never complete: let the verb handler return (finish() then refuses).
    const raw = this.#raw;
    this.#raw = undefined;
    raw?.done();
    const tx = this.transaction;
    const done = async () => {
      // The spool file is gone before `closed` resolves (shutdown and tests rely on it).
      await abandoned?.discard();
      if (tx && !this.#busy) await this.#resetTransaction('disconnect');
      if (this.#host.hooks.disconnect.isUsed()) await this.#host.hooks.disconnect.promise(this);
    };
    done()
      .catch((err) => this.log.error({ err }, 'disconnect hooks failed'))
      .finally(() => {
        this.#debug({ transactions: this.transactionCount }, 'disconnected');
        this.#finalized = true;
        this.#host.sessionClosed(this);
        for (const w of this.#closedWaiters ?? []) w();
        this.#closedWaiters = undefined;
      });
  }

  // ---- commands ---------------------------------------------------------

  /** Handle one command line; returns a promise when the command went async. */
  #command(line: string): Promise<void> | undefined {
    const { verb, argument } = parseCommand(line);
    if (this.#state === 'rejected') {
      if (verb === 'QUIT') this.#queueReply(Replies.bye);
      else this.#queueReply(Replies.badSequence);
      return undefined;
    }
    switch (verb) {
      case 'EHLO':
      case 'HELO':
        return this.#helo(verb, argument);
      case 'MAIL':
        return this.#mail(argument);
      case 'RCPT':
        return this.#rcpt(argument);
      case 'DATA':
        return this.#data(argument);
      case 'RSET':
        if (argument !== '') return this.#queueReply(Replies.syntaxError);
        if (this.transaction)
          return whenSettled(this.#resetTransaction('rset'), () => this.#queueReply(Replies.resetOk));
        return this.#queueReply(Replies.resetOk);
      case 'NOOP':
        return this.#queueReply(Replies.noopOk);
      case 'QUIT':
        return this.#queueReply(Replies.bye);
    }
    const ext = this.#host.registry.verb(verb);
    if (ext) return this.#extensionVerb(verb, argument, ext);
    switch (verb) {
      case 'VRFY':
        return this.#queueReply(argument === '' ? Replies.syntaxError : Replies.cannotVerify);
      case 'HELP':
        return this.#queueReply(Replies.help);
      case 'EXPN':
      case 'TURN':
        return this.#queueReply(Replies.notImplemented);
    }
    this.#debug({ verb: verb.slice(0, 16) }, 'unknown command');
    return this.#queueReply(Replies.unknownCommand);
  }

  #helo(verb: 'EHLO' | 'HELO', argument: string): Promise<void> | undefined {
    const domain = argument.trim();
    if (domain === '' || /[\s\x00-\x1f\x7f]/.test(domain)) {
      return this.#queueReply(reply(501, '5.5.4', `${verb} requires a domain or address literal`));
    }
    const helo: Helo = { verb, domain };
    const run = async () => {
      if (this.transaction) await this.#resetTransaction('rset');
      if (this.#host.hooks.ehlo.isUsed()) {
        const verdict = await callBail(this.#host.hooks, 'ehlo', this, helo);
        if (verdict && !isPositive(verdict)) return this.#queueReply(verdict, false);
      }
      this.helo = helo;
      this.enhancedStatusCodes = false;
      if (verb === 'HELO') return this.#queueReply(reply(250, undefined, this.hostname), false);
      const keywords = this.#host.hooks.capabilities.isUsed()
        ? await callWaterfall(this.#host.hooks, 'capabilities', [], this)
        : [];
      this.#queueReply(reply(250, undefined, [`${this.hostname} greets ${domain}`, ...keywords]), false);
    };
    return run();
  }

  #openTransaction(): SmtpTransaction {
    this.#txSeq++;
    const tx = new SmtpTransaction(
      this,
      this.#txSeq === 1 ? this.id : `${this.id}.${this.#txSeq}`,
      this.#host.now(),
    );
    return tx;
  }

  /** Run MAIL/RCPT parameter handlers; a reply means refuse the command. */
  #applyParams(command: 'MAIL' | 'RCPT', params: Params, ctx: ParamContext): Reply | undefined {
    for (const [key, value] of params) {
      const def = this.#host.registry.param(command, key);
      if (!def) return Replies.paramNotRecognized;
      const verdict = def.handler(value, ctx);
      if (verdict) return verdict;
    }
    return undefined;
  }

  #mail(argument: string): Promise<void> | undefined {
    if (!this.helo) return this.#queueReply(Replies.needHelo);
    if (this.transaction) return this.#queueReply(Replies.nestedMail);
    if (this.#host.draining) return this.#queueReply(Replies.shuttingDown);
    const split = peekParams(argument, 'FROM');
    if (!split) return this.#queueReply(Replies.syntaxError);
    const params = parseParams(split.paramsText, true);
    if (!params) return this.#queueReply(Replies.syntaxError);
    const tx = this.#openTransaction();
    const refused = this.#applyParams('MAIL', params, { session: this, tx, recipient: undefined });
    if (refused) return this.#queueReply(refused);
    if (!tx.utf8 && hasNonAscii(split.paramsText)) return this.#queueReply(Replies.syntaxError);
    const parsed = parsePath(split.pathText, { utf8: tx.utf8, allowNull: true, allowPostmaster: false });
    if (!parsed.ok) return this.#queueReply(addressError(parsed.error, 'sender'));
    if (parsed.rest.trim() !== '') return this.#queueReply(Replies.syntaxError);
    tx.from = { address: parsed.address, params };
    if (!this.#host.hooks.mail.isUsed()) {
      this.transaction = tx;
      return this.#queueReply(Replies.senderOk);
    }
    return whenSettled(callBail(this.#host.hooks, 'mail', tx, tx.from), (verdict) => {
      if (verdict && !isPositive(verdict)) {
        tx.log.info({ from: tx.from.address?.address ?? '', code: verdict.code }, 'sender refused');
        return this.#queueReply(verdict);
      }
      this.transaction = tx;
      this.#queueReply(verdict ?? Replies.senderOk);
    });
  }

  #rcpt(argument: string): Promise<void> | undefined {
    const tx = this.transaction;
    if (!tx) return this.#queueReply(this.helo ? Replies.needMail : Replies.needHelo);
    if (tx.recipients.length >= this.#host.limits.maxRecipients)
      return this.#queueReply(Replies.tooManyRecipients);
    const split = peekParams(argument, 'TO');
    if (!split) return this.#queueReply(Replies.syntaxError);
    const params = parseParams(split.paramsText, tx.utf8);
    if (!params) return this.#queueReply(Replies.syntaxError);
    const attributes: RecipientAttributes = {};
    const refused = this.#applyParams('RCPT', params, { session: this, tx, recipient: attributes });
    if (refused) return this.#queueReply(refused);
    const parsed = parsePath(split.pathText, { utf8: tx.utf8, allowNull: false, allowPostmaster: true });
    if (!parsed.ok) return this.#queueReply(addressError(parsed.error, 'recipient'));
    if (parsed.rest.trim() !== '') return this.#queueReply(Replies.syntaxError);
    const address = parsed.address as Address;
    const to = { address, params };
    return whenSettled(callBail(this.#host.hooks, 'rcpt', tx, to), (verdict) => {
      if (this.transaction !== tx) return this.#queueReply(Replies.needMail);
      if (!verdict) verdict = Replies.relayDenied;
      if (!isPositive(verdict)) {
        tx.log.info({ to: address.address, code: verdict.code }, 'recipient refused');
        return this.#queueReply(verdict);
      }
      tx.recipients.push({ address, params, attributes });
      this.#queueReply(verdict);
    });
  }

  #data(argument: string): Promise<void> | undefined {
    const tx = this.transaction;
    if (!tx) return this.#queueReply(this.helo ? Replies.needMail : Replies.needHelo);
    if (argument !== '') return this.#queueReply(Replies.syntaxError);
    if (this.#chunked) return this.#queueReply(reply(503, '5.5.1', 'DATA not allowed after BDAT'));
    if (tx.recipients.length === 0) return this.#queueReply(Replies.noValidRecipients);
    const begin = () => {
      this.#queueReply(Replies.startData);
      this.beginMessage(tx);
    };
    if (!this.#host.hooks.data.isUsed()) {
      begin();
      return undefined;
    }
    return whenSettled(callBail(this.#host.hooks, 'data', tx), (verdict) => {
      if (verdict && !isPositive(verdict)) return this.#queueReply(verdict);
      begin();
    });
  }

  #newSpool(tx: SmtpTransaction): SpoolWriter {
    const spool = new SpoolWriter(this.#host.spoolDir, tx.id);
    this.#spool = spool;
    return spool;
  }

  /** Write to the spool, pausing the socket while the spool file drains. */
  #spoolWrite(spool: SpoolWriter, chunk: Buffer): void {
    if (!spool.write(chunk) && !this.#spoolPaused) {
      this.#spoolPaused = true;
      this.#pause();
      spool.onDrain(() => {
        this.#spoolPaused = false;
        this.#resume();
      });
    }
  }

  /** Switch to data mode for `tx`: received octets go through the DATA decoder into the spool. */
  beginMessage(tx: SmtpTransaction): void {
    const spool = this.#newSpool(tx);
    this.#decoder = new DataDecoder({
      maxSize: this.#host.limits.maxMessageSize,
      onData: (chunk) => this.#spoolWrite(spool, chunk),
    });
    this.#state = 'data';
    this.#armTimeout(this.#host.timeouts.data);
    if (!this.#busy) {
      this.#flush();
      const rest = this.#lines.take();
      if (rest.length > 0) this.#receiveData(rest);
    }
  }

  #receiveData(chunk: Buffer): void {
    const decoder = this.#decoder;
    if (!decoder) return;
    const end = decoder.write(chunk);
    if (end < 0) {
      // Input may have been paused while it piled up in command mode (a slow hook): data mode reads on.
      this.#resume();
      this.#stopIfStarved();
      return;
    }
    this.#state = 'command';
    this.#armTimeout(this.#host.timeouts.command);
    if (end < chunk.length) this.#lines.push(chunk.subarray(end));
    this.#busy = true;
    const spool = this.#spool as SpoolWriter;
    this.#decoder = undefined;
    this.#spool = undefined;
    this.#completeMessage(spool, decoder.size, decoder.overflow, decoder.bareLineEndings).then(
      (r) => {
        this.#queueReply(r);
        this.#afterAsync();
      },
      (err) => {
        this.log.error({ err }, `end of data failed: ${describe(err)}`);
        this.#queueReply(Replies.localError);
        this.#afterAsync();
      },
    );
  }

  /**
   * The end of the message path, shared by DATA and chunked (BDAT) messages:
   * header transforms, `message` hook, `queue` hook. Returns the final reply
   * and ends the transaction.
   */
  async #completeMessage(spool: SpoolWriter, size: number, overflow: boolean, bare: boolean): Promise<Reply> {
    const tx = this.transaction as SmtpTransaction;
    if (overflow) {
      await spool.discard();
      return this.#endMessage(tx, size, Replies.messageTooBig);
    }
    if (bare && this.#host.smtp.bareLineEndings === 'reject') {
      await spool.discard();
      return this.#endMessage(tx, size, Replies.bareLineEnding);
    }
    let fields = [receivedHeader(tx, this.#host.now())];
    if (this.#host.hooks.headers.isUsed())
      fields = await callWaterfall(this.#host.hooks, 'headers', fields, tx);
    let message: SpooledMessage;
    try {
      message = await spool.finish(fields, bare);
    } catch (err) {
      tx.log.error({ err }, `spool failed: ${describe(err)}`);
      await spool.discard();
      return this.#endMessage(tx, size, Replies.insufficientStorage);
    }
    let reply: Reply;
    let queueId: string | undefined;
    try {
      let verdict: Reply | undefined;
      if (this.#host.hooks.message.isUsed())
        verdict = await callBail(this.#host.hooks, 'message', tx, message);
      if (verdict && !isPositive(verdict)) reply = verdict;
      else {
        const result = await callBail(this.#host.hooks, 'queue', tx, message);
        if (result === undefined) {
          tx.log.error('no plugin queued the message (configure a queue plugin)');
          reply = Replies.localError;
        } else if (isReply(result)) reply = isPositive(result) ? Replies.localError : result;
        else {
          reply = queuedReply(result.id);
          queueId = result.id;
        }
      }
    } finally {
      const disposed = message.dispose();
      if (disposed) await disposed;
    }
    return this.#endMessage(tx, size, reply, queueId);
  }

  /** The transaction ends with the message's final reply: logged, and reset unless the message was queued. */
  #endMessage(tx: SmtpTransaction, size: number, r: Reply, queueId?: string): Reply | Promise<Reply> {
    this.transactionCount++;
    if (this.#baseLog.isLevelEnabled('info')) {
      this.log.info(
        {
          tid: tx.id,
          from: tx.from.address?.address ?? '',
          rcpts: tx.recipients.length,
          size,
          code: r.code,
          ...(queueId === undefined ? {} : { queueId }),
          ms: this.#host.now() - tx.startedAt,
        },
        queueId === undefined ? 'message refused' : 'message queued',
      );
    }
    if (queueId !== undefined) {
      this.transaction = undefined;
      return r;
    }
    return this.#resetTransaction('rejected').then(() => r);
  }

  // ---- chunked messages (the seam BDAT uses) ----------------------------

  #chunked: { spool: SpoolWriter; overflow: boolean; tx: SmtpTransaction } | undefined;
  #raw: { remaining: number; into: SpoolWriter | undefined; done: () => void } | undefined;

  #chunkApi: ChunkedMessage | undefined;
  /** The chunked-message seam, made when a verb first needs it (most sessions never do). */
  get #chunks(): ChunkedMessage {
    this.#chunkApi ??= this.#makeChunkApi();
    return this.#chunkApi;
  }

  #makeChunkApi(): ChunkedMessage {
    return {
      begin: async () => {
        const tx = this.transaction;
        if (!tx) return this.helo ? Replies.needMail : Replies.needHelo;
        if (tx.recipients.length === 0) return Replies.noValidRecipients;
        if (this.#chunked) return undefined;
        if (this.#host.hooks.data.isUsed()) {
          const verdict = await callBail(this.#host.hooks, 'data', tx);
          if (verdict && !isPositive(verdict)) return verdict;
        }
        this.#chunked = { spool: this.#newSpool(tx), overflow: false, tx };
        return undefined;
      },
      read: (size) => this.#readRaw(size),
      finish: async () => {
        const c = this.#chunked;
        if (!c || this.transaction !== c.tx) return Replies.badSequence;
        this.#chunked = undefined;
        this.#spool = undefined;
        return this.#completeMessage(c.spool, c.spool.size, c.overflow, false);
      },
      abort: async () => {
        const c = this.#chunked;
        this.#chunked = undefined;
        this.#spool = undefined;
        await c?.spool.discard();
      },
    };
  }

  /** Read exactly `size` raw octets: into the open chunked message, or discarded. */
  #readRaw(size: number): Promise<void> {
    const c = this.#chunked;
    let into: SpoolWriter | undefined;
    if (c && this.transaction === c.tx) {
      if (c.overflow || c.spool.size + size > this.#host.limits.maxMessageSize) c.overflow = true;
      else into = c.spool;
    }
    return new Promise<void>((resolve) => {
      this.#raw = { remaining: size, into, done: resolve };
      this.#state = 'raw';
      this.#armTimeout(this.#host.timeouts.data);
      const buffered = this.#lines.take();
      if (buffered.length > 0) this.#receiveRaw(buffered);
      else if (size === 0) this.#receiveRaw(Buffer.alloc(0));
      else {
        this.#resume();
        this.#stopIfStarved();
      }
    });
  }

  #receiveRaw(chunk: Buffer): void {
    const raw = this.#raw;
    if (!raw) return;
    const n = Math.min(raw.remaining, chunk.length);
    if (n > 0 && raw.into) this.#spoolWrite(raw.into, chunk.subarray(0, n));
    raw.remaining -= n;
    if (raw.remaining > 0) {
      // As in data mode: input paused while it piled up behind the command must flow again.
      this.#resume();
      this.#stopIfStarved();
      return;
    }
    this.#raw = undefined;
    this.#state = 'command';
    this.#armTimeout(this.#host.timeouts.command);
    if (n < chunk.length) this.#lines.push(chunk.subarray(n));
    raw.done();
  }

  async #resetTransaction(_why: 'rset' | 'rejected' | 'disconnect'): Promise<void> {
    const tx = this.transaction;
    this.transaction = undefined;
    if (this.#chunked) await this.#chunks.abort();
    if (tx && this.#host.hooks.reset.isUsed()) await this.#host.hooks.reset.promise(tx);
  }

  // ---- extension verbs --------------------------------------------------

  #extensionVerb(
    verb: string,
    argument: string,
    def: import('./plugin.ts').VerbDefinition,
  ): Promise<void> | undefined {
    if (def.requiresHelo !== false && !this.helo) return this.#queueReply(Replies.needHelo);
    if (def.outsideTransaction && this.transaction) return this.#queueReply(Replies.badSequence);
    const ctx: VerbContext = {
      session: this,
      verb,
      argument,
      send: (r) => this.#sendNow(r),
      readLine: () => this.#readLine(),
      upgradeToTls: (options) => this.#upgradeToTls(options),
      checkCredentials: async (request) => callBail(this.#host.hooks, 'auth', this, request),
      reconnectAs: (remote) => this.#reconnectAs(remote),
      chunks: this.#chunks,
    };
    return (async () => {
      const r = await def.handler(ctx);
      if (r) this.#queueReply(r);
    })();
  }

  #readLine(): Promise<string | undefined> {
    if (this.#state === 'closed') return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const ev = this.#lines.next();
      if (ev) return resolve(ev.kind === 'line' ? ev.line : '');
      if (this.#inputEnded) return resolve(undefined);
      this.#lineWaiter = resolve;
      this.#flush();
      this.#resume();
    });
  }

  /** The STARTTLS / implicit TLS seam: wrap the socket, reset the session. */
  async #upgradeToTls(options: Parameters<VerbContext['upgradeToTls']>[0]): Promise<TlsInfo> {
    this.#flush();
    this.#lines.clear(); // anything pipelined after STARTTLS is discarded (CVE-2011-0411 class)
    const plain = this.#socket;
    this.#detach(plain);
    const secure = new TLSSocket(plain, { ...options, isServer: true });
    this.#socket = secure;
    // A client that goes silent mid-handshake is timed out like any other.
    this.#armTimeout(this.#host.timeouts.command);
    let closed = false;
    const handlers: Array<[string, (err: Error) => void]> = [];
    try {
      await new Promise<void>((resolve, reject) => {
        handlers.push(
          ['secure', () => resolve()],
          ['error', (err: Error) => reject(err)],
          [
            'close',
            () => {
              closed = true;
              reject(new Error('closed during TLS handshake'));
            },
          ],
        );
        for (const [ev, fn] of handlers) secure.once(ev, fn);
        this.#handshakeTimeout = () => reject(new Error('TLS handshake timed out'));
      });
    } catch (err) {
      this.log.info({ err: describe(err) }, 'TLS handshake failed');
      this.#attach(secure);
      if (closed) this.#finalize();
      else secure.destroy();
      throw err;
    } finally {
      this.#handshakeTimeout = undefined;
      for (const [ev, fn] of handlers) secure.off(ev, fn);
    }
    this.#attach(secure);
    const cipher = secure.getCipher();
    const servername = (secure as TLSSocket & { servername?: string | false }).servername;
    const info: TlsInfo = {
      protocol: secure.getProtocol() ?? 'unknown',
      cipher: cipher?.standardName ?? cipher?.name ?? 'unknown',
      peerVerified: secure.authorized,
      ...(typeof servername === 'string' ? { servername } : {}),
    };
    this.tls = info;
    this.helo = undefined;
    this.enhancedStatusCodes = false;
    if (this.transaction) await this.#resetTransaction('rset');
    this.log.info({ tls: info.protocol, cipher: info.cipher }, 'TLS established');
    return info;
  }
}

/** Run `next` on a value that may still be pending: synchronously when it is not. */
function whenSettled<T>(value: T | Promise<T>, next: (v: T) => void): Promise<void> | undefined {
  if (value instanceof Promise) return value.then(next);
  next(value);
  return undefined;
}

function addressError(error: 'syntax' | 'too-long' | 'non-ascii', role: 'sender' | 'recipient'): Reply {
  if (error === 'non-ascii') return Replies.nonAsciiAddress;
  if (error === 'too-long') return reply(501, role === 'sender' ? '5.1.7' : '5.1.3', 'Path too long');
  return role === 'sender' ? Replies.badSenderSyntax : Replies.badRecipientSyntax;
}

function hasNonAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return true;
  return false;
}

export function normaliseIp(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}
