/**
 * The outbound SMTP (RFC 5321) and LMTP (RFC 2033) client: one connection,
 * one message, per-recipient results.
 *
 *   const report = await sendMessage(
 *     { target: { host: 'smarthost.example', port: 25 }, heloName: 'mx.example.org' },
 *     envelopeOf(job),
 *   );
 *
 * Extensions used when the server offers them: STARTTLS (RFC 3207), AUTH PLAIN
 * and LOGIN (RFC 4954), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8
 * (RFC 6531), DSN (RFC 3461), PIPELINING (RFC 2920), CHUNKING and BINARYMIME
 * (RFC 3030), REQUIRETLS (RFC 8689). Never logs message data or credentials.
 */
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { type Reply, reply } from '../../core/reply.ts';
import type { DeliveryReport, RecipientResult } from '../../core/types.ts';
import { Capabilities } from './capabilities.ts';
import { ConnectionError, SmtpConnection, type Target, type TlsSettings } from './connection.ts';
import type { OutboundEnvelope, OutboundRecipient } from './envelope.ts';
import { OutboundReplies as R } from './local-replies.ts';
import { chunks, dotStuffed, type MessageFacts, scanMessage } from './message-body.ts';
import { type RemoteReply, replyText } from './reply-reader.ts';
import type { TlsFailureType } from './tls-report.ts';
import { encodeOrcpt, encodeXtext } from './xtext.ts';

/** Timeouts in milliseconds (RFC 5321 4.5.3.2 gives the defaults). */
export interface SmtpTimeouts {
  /** TCP connect (and the implicit TLS handshake). */
  readonly connect: number;
  /** The 220 greeting (4.5.3.2.1: 5 minutes). */
  readonly greeting: number;
  /** EHLO, STARTTLS and its handshake, AUTH, QUIT: 5 minutes. */
  readonly command: number;
  /** MAIL (4.5.3.2.2: 5 minutes). */
  readonly mail: number;
  /** Each RCPT (4.5.3.2.3: 5 minutes). */
  readonly rcpt: number;
  /** The 354 to DATA (4.5.3.2.4: 2 minutes). */
  readonly dataInit: number;
  /** Each block of data sent, and each BDAT reply but the last (4.5.3.2.5: 3 minutes). */
  readonly dataBlock: number;
  /** The reply after the final dot or BDAT LAST (4.5.3.2.6: 10 minutes). */
  readonly dataFinal: number;
}

export const DEFAULT_TIMEOUTS: SmtpTimeouts = Object.freeze({
  connect: 30_000,
  greeting: 300_000,
  command: 300_000,
  mail: 300_000,
  rcpt: 300_000,
  dataInit: 120_000,
  dataBlock: 180_000,
  dataFinal: 600_000,
});

/**
 * `opportunistic`: STARTTLS when offered; `required`: STARTTLS or defer;
 * `implicit`: TLS from the first byte (port 465); `none`: never TLS.
 */
export type TlsMode = 'opportunistic' | 'required' | 'implicit' | 'none';

export interface SmtpClientOptions {
  readonly target: Target;
  /** `lmtp` greets with LHLO and reads one reply per recipient after the data (RFC 2033). Default `smtp`. */
  readonly protocol?: 'smtp' | 'lmtp';
  /** The name this client gives in EHLO/HELO/LHLO. */
  readonly heloName: string;
  readonly tls?: TlsMode;
  /** Certificate checks; default: verify against the system CAs. */
  readonly tlsSettings?: TlsSettings;
  readonly auth?: { readonly user: string; readonly pass: string };
  /** Send credentials without TLS (default false). */
  readonly allowInsecureAuth?: boolean;
  readonly timeouts?: Partial<SmtpTimeouts>;
  /** Use BDAT whenever the server offers CHUNKING (default true); BINARYMIME always needs it. */
  readonly chunking?: boolean;
  /** Octets per BDAT chunk (default 1 MiB). */
  readonly chunkSize?: number;
  /** Use PIPELINING when offered (default true). */
  readonly pipelining?: boolean;
  /** Source address to connect from (an outbound IP of this host). */
  readonly localAddress?: string;
  /** The address connected to, when `mtaName` is a host name (shown in results and logs). */
  readonly mtaAddress?: string;
  /** Shown in results (`mta`) and logs; default `host:port` or the socket path. */
  readonly mtaName?: string;
  readonly log?: Logger;
}

type Status = RecipientResult['status'];

/** Ends the conversation: every recipient without a result gets this one. */
class Settle {
  readonly status: Status;
  readonly reply: Reply;
  /** Close without QUIT (the connection is in an unknown state). */
  readonly abort: boolean;
  /** The failure is this connection's or this host's, not the message's: another host may do. */
  readonly connection: boolean;
  /** TLS could not be had as required: the failure as TLS reporting names it. */
  readonly tlsFailure: TlsFailureType | undefined;
  constructor(status: Status, r: Reply, abort = false, connection = false, tlsFailure?: TlsFailureType) {
    this.status = status;
    this.reply = r;
    this.abort = abort;
    this.connection = connection;
    this.tlsFailure = tlsFailure;
  }

  asConnection(): Settle {
    return new Settle(this.status, this.reply, this.abort, true, this.tlsFailure);
  }
}

const NO_STARTTLS: TlsFailureType = 'starttls-not-supported';
const statusOf = (code: number): Status => (code < 400 ? 'delivered' : code < 500 ? 'deferred' : 'failed');
const positive = (r: RemoteReply): boolean => r.code >= 200 && r.code < 300;
const negative = (r: RemoteReply): boolean => r.code >= 400;
const ASCII = /^[\x00-\x7f]*$/;
const UNSAFE = /[\x00-\x1f\x7f]/;

function remoteReply(r: RemoteReply): Reply {
  return reply(r.code, r.enhanced, replyText(r));
}

function describeReply(r: RemoteReply): string {
  return `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''} ${replyText(r, 200)}`.trim();
}

/** Deliver one message over one connection; results in the order of `envelope.recipients`. */
export async function sendMessage(
  options: SmtpClientOptions,
  envelope: OutboundEnvelope,
): Promise<DeliveryReport> {
  const ready = await prepareMessage(envelope);
  if (!ready.ok) return failAll(envelope, ready.status, ready.reply, mtaNameOf(options));
  let conn: ClientConnection;
  try {
    conn = await ClientConnection.open(options, envelope.requireTls === true);
  } catch (err) {
    if (!(err instanceof OpenFailure)) throw err;
    return failAll(envelope, err.status, err.reply, mtaNameOf(options));
  }
  try {
    return await conn.send(envelope, ready.facts);
  } finally {
    await conn.quit();
  }
}

/** What must hold before a message is worth a connection: a sendable sender and a readable message. */
export type Prepared =
  | { readonly ok: true; readonly facts: MessageFacts }
  | { readonly ok: false; readonly status: 'failed' | 'deferred'; readonly reply: Reply };

/** Check the sender and read the message once (size, 8-bit); no connection needed. */
export async function prepareMessage(envelope: OutboundEnvelope): Promise<Prepared> {
  if (!validPath(envelope.from)) return { ok: false, status: 'failed', reply: R.badSender() };
  try {
    return { ok: true, facts: await scanMessage(envelope.stream()) };
  } catch {
    return { ok: false, status: 'deferred', reply: R.readFailed() };
  }
}

/** Every recipient gets the same result (nothing was sent). */
export function failAll(
  envelope: Pick<OutboundEnvelope, 'recipients'>,
  status: Status,
  r: Reply,
  mta?: string,
  mtaAddress?: string,
): DeliveryReport {
  return {
    results: envelope.recipients.map((rcpt) => ({
      recipient: rcpt.address,
      status,
      reply: replyRecord(r),
      ...(mta === undefined ? {} : { mta }),
      ...(mtaAddress === undefined ? {} : { mtaAddress }),
    })),
  };
}

/** A reply as a result records it (text on one line). */
function replyRecord(r: Reply): NonNullable<RecipientResult['reply']> {
  const text = typeof r.text === 'string' ? r.text : r.text.join(' ');
  return { code: r.code, ...(r.enhanced === undefined ? {} : { enhanced: r.enhanced }), text };
}

function mtaNameOf(o: Pick<SmtpClientOptions, 'mtaName' | 'target'>): string {
  const t = o.target;
  return o.mtaName ?? (t.socketPath !== undefined ? t.socketPath : `${t.host}:${t.port}`);
}

/**
 * Why a connection could not be opened and made ready (connect, greeting,
 * EHLO, STARTTLS, AUTH). `connection` says the failure is the connection's
 * (refused, lost, timed out, TLS, or a 421), so another host may do better.
 */
export class OpenFailure extends Error {
  readonly status: 'failed' | 'deferred';
  readonly reply: Reply;
  readonly connection: boolean;
  /** The TLS handshake failed (after STARTTLS, or implicit TLS). */
  readonly tls: boolean;
  /** TLS was required and could not be had: the failure as TLS reporting (RFC 8460) names it. */
  readonly tlsFailure: TlsFailureType | undefined;
  constructor(
    status: 'failed' | 'deferred',
    r: Reply,
    connection: boolean,
    tls = false,
    tlsFailure?: TlsFailureType,
  ) {
    super(typeof r.text === 'string' ? r.text : r.text.join(' '));
    this.name = 'OpenFailure';
    this.status = status;
    this.reply = r;
    this.connection = connection;
    this.tls = tls;
    this.tlsFailure = tlsFailure;
  }
}

/**
 * A connection that is greeted, upgraded to TLS and authenticated as the
 * options say, and carries mail transactions one after another (RSET between
 * them): what a connection pool keeps.
 */
export class ClientConnection {
  readonly #o: SmtpClientOptions;
  readonly #t: SmtpTimeouts;
  readonly #mta: string;
  readonly #lmtp: boolean;
  /** The logger of the connection (of the job that opened it). */
  readonly #connLog: Logger | undefined;
  /** The logger of the transaction under way (its job's), else the connection's. */
  #baseLog: Logger | undefined;
  /** `#baseLog` with the server's name, made when first needed. */
  #childCache: Logger | undefined;
  #conn: SmtpConnection | undefined;
  #caps = Capabilities.none();
  #reusable = true;
  #transactions = 0;
  // The transaction under way.
  #env: OutboundEnvelope = { from: '', recipients: [], stream: () => Readable.from([]) };
  #results: Array<RecipientResult | undefined> = [];
  #facts: MessageFacts | undefined;

  private constructor(options: SmtpClientOptions) {
    this.#o = options;
    this.#t = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.#mta = mtaNameOf(options);
    this.#lmtp = options.protocol === 'lmtp';
    this.#baseLog = this.#connLog = options.log;
  }

  /** The logger, with the server's name and address bound (made once per transaction, when needed). */
  get #log(): Logger | undefined {
    this.#childCache ??= this.#baseLog?.child(this.#logBindings());
    return this.#childCache;
  }

  #logBindings(): { mta: string; mtaAddress?: string } {
    return this.#o.mtaAddress === undefined
      ? { mta: this.#mta }
      : { mta: this.#mta, mtaAddress: this.#o.mtaAddress };
  }

  /**
   * Connect and get ready for transactions; throws `OpenFailure`. With
   * `requireTls` (RFC 8689) a failure to get TLS is final, not a deferral.
   */
  static async open(options: SmtpClientOptions, requireTls = false): Promise<ClientConnection> {
    const c = new ClientConnection(options);
    try {
      await c.#open(requireTls);
      return c;
    } catch (err) {
      const settle = c.#settleFor(err);
      c.#conn?.close();
      if (!(err instanceof Settle)) c.#log?.warn({ err: String(err) }, 'connection failed');
      const connection = !(err instanceof Settle) || err.connection;
      // Nothing was sent: a positive reply out of place is still no delivery.
      const status = settle.status === 'failed' ? 'failed' : 'deferred';
      const tls = err instanceof ConnectionError && err.kind === 'tls';
      const tlsFailure = err instanceof ConnectionError ? err.tlsFailure : settle.tlsFailure;
      throw new OpenFailure(status, settle.reply, connection, tls, tlsFailure);
    }
  }

  /** The server's name in results and logs (`mtaName`, or `host:port`). */
  get mta(): string {
    return this.#mta;
  }

  /** The address connected to, when known apart from the name. */
  get mtaAddress(): string | undefined {
    return this.#o.mtaAddress;
  }

  /** The server's EHLO keywords. */
  get capabilities(): Capabilities {
    return this.#caps;
  }

  get tls(): SmtpConnection['tls'] {
    return this.#conn?.tls;
  }

  /** Transactions attempted on this connection. */
  get transactions(): number {
    return this.#transactions;
  }

  /** Whether another transaction may be tried (the connection is open and in a known state). */
  get reusable(): boolean {
    return this.#reusable && this.#conn !== undefined && !this.#conn.closed;
  }

  /** Send RSET and wait for 250: the connection is alive and out of any transaction. */
  async reset(): Promise<boolean> {
    const conn = this.#conn;
    if (!conn || !this.reusable) return false;
    try {
      conn.send(['RSET']);
      const r = await conn.read(this.#t.command, 'RSET');
      if (r.code === 250) return true;
    } catch {
      // gone
    }
    this.#reusable = false;
    return false;
  }

  /**
   * One mail transaction; results in the order of `envelope.recipients`.
   * Never throws. `facts` from `prepareMessage` saves reading the message again;
   * `log` is the job's logger (a pooled connection serves many jobs).
   */
  async send(envelope: OutboundEnvelope, facts?: MessageFacts, log?: Logger): Promise<DeliveryReport> {
    this.#baseLog = log ?? this.#connLog;
    this.#childCache = undefined;
    this.#env = envelope;
    this.#results = envelope.recipients.map(() => undefined);
    this.#facts = facts;
    this.#transactions++;
    try {
      if (!validPath(envelope.from)) throw new Settle('failed', R.badSender());
      this.#facts ??= await scanMessage(envelope.stream());
      this.#checkRequireTls();
      await this.#transaction();
    } catch (err) {
      const settle = this.#settleFor(err);
      if (settle.abort) {
        this.#reusable = false;
        this.#conn?.close();
      }
      this.#settleRest(settle.status, settle.reply);
      if (!(err instanceof Settle)) this.#log?.warn({ err: String(err) }, 'delivery attempt failed');
    }
    const results = this.#results.map(
      (r, i) =>
        r ?? this.#result(i, 'deferred', R.unexpectedReply(this.#mta, 'no result for this recipient')),
    );
    this.#baseLog?.info(
      {
        ...this.#logBindings(),
        delivered: results.filter((r) => r.status === 'delivered').length,
        deferred: results.filter((r) => r.status === 'deferred').length,
        failed: results.filter((r) => r.status === 'failed').length,
        tls: this.#conn?.tls?.protocol,
        transaction: this.#transactions,
      },
      'delivery attempt',
    );
    return { results };
  }

  /** Send QUIT and close; never throws. */
  async quit(): Promise<void> {
    this.#reusable = false;
    await this.#conn?.quit(Math.min(this.#t.command, 10_000));
  }

  /** Close at once. */
  close(): void {
    this.#reusable = false;
    this.#conn?.close();
  }

  #settleFor(err: unknown): Settle {
    if (err instanceof Settle) return err;
    if (err instanceof ConnectionError) {
      switch (err.kind) {
        case 'connect':
          return new Settle('deferred', R.cannotConnect(this.#mta), true);
        case 'timeout':
          return new Settle('deferred', R.timeout(this.#mta, err.stage ?? 'a command'), true);
        case 'protocol':
          return new Settle('deferred', R.protocolError(this.#mta), true);
        case 'tls':
          return new Settle(
            'deferred',
            err.certificate ? R.certificateNotVerified(this.#mta) : R.tlsFailed(this.#mta),
            true,
          );
        default:
          return new Settle('deferred', R.connectionLost(this.#mta), true);
      }
    }
    return new Settle('deferred', R.readFailed(), true);
  }

  #result(i: number, status: Status, r: Reply): RecipientResult {
    const rcpt = this.#env.recipients[i] as OutboundRecipient;
    // An SMTP next hop that accepted the message answers DSN requests itself when it
    // offers DSN (we passed NOTIFY on); otherwise it was relayed out of DSN's reach.
    // LMTP is final delivery.
    const handoff =
      status === 'delivered' && !this.#lmtp ? (this.#caps.has('DSN') ? 'passed-on' : 'relayed') : undefined;
    return {
      recipient: rcpt.address,
      status,
      reply: replyRecord(r),
      mta: this.#mta,
      ...(this.#o.mtaAddress === undefined ? {} : { mtaAddress: this.#o.mtaAddress }),
      ...(handoff === undefined ? {} : { dsnHandoff: handoff }),
    };
  }

  #settle(i: number, status: Status, r: Reply): void {
    if (this.#results[i] === undefined) this.#results[i] = this.#result(i, status, r);
  }

  #settleRest(status: Status, r: Reply): void {
    for (let i = 0; i < this.#results.length; i++) this.#settle(i, status, r);
  }

  /** A reply that ends the attempt for every recipient left, by its class; 421 also ends the connection. */
  #fromRemote(r: RemoteReply): Settle {
    if (r.code === 421) return new Settle('deferred', remoteReply(r), true, true);
    if (r.code >= 400) return new Settle(statusOf(r.code), remoteReply(r));
    return new Settle('deferred', R.unexpectedReply(this.#mta, describeReply(r)));
  }

  async #open(requireTls: boolean): Promise<void> {
    const mode = this.#o.tls ?? 'opportunistic';
    const settings: TlsSettings = this.#o.tlsSettings ?? { rejectUnauthorized: true };
    if (requireTls && mode === 'none') throw new Settle('failed', R.requireTlsUnsupported(this.#mta));

    const conn = await SmtpConnection.open(
      this.#o.target,
      this.#t.connect,
      mode === 'implicit' ? settings : undefined,
      this.#o.localAddress,
    );
    this.#conn = conn;
    const greeting = await conn.read(this.#t.greeting, 'the greeting');
    // A server that does not want mail now answers 554 (RFC 5321 3.1) or 421: another host may.
    if (greeting.code !== 220) throw this.#fromRemote(greeting).asConnection();
    await this.#hello();

    if (!conn.tls && mode !== 'none' && mode !== 'implicit') {
      if (this.#caps.has('STARTTLS')) {
        conn.send(['STARTTLS']);
        const r = await conn.read(this.#t.command, 'STARTTLS');
        if (r.code === 220) {
          await conn.startTls(settings, this.#t.command);
          await this.#hello();
        } else if (r.code === 421) {
          throw this.#fromRemote(r);
        } else if (requireTls) {
          throw new Settle('failed', R.requireTlsUnsupported(this.#mta), false, false, NO_STARTTLS);
        } else if (mode === 'required') {
          throw new Settle('deferred', R.tlsRefused(this.#mta, describeReply(r)), false, true, NO_STARTTLS);
        }
      } else if (requireTls) {
        throw new Settle('failed', R.requireTlsUnsupported(this.#mta), false, false, NO_STARTTLS);
      } else if (mode === 'required') {
        throw new Settle('deferred', R.tlsNotOffered(this.#mta), false, true, NO_STARTTLS);
      }
    }
    if (this.#o.auth) await this.#authenticate(this.#o.auth);
  }

  /** RFC 8689: a REQUIRETLS message goes only over verified TLS to a server that offers REQUIRETLS. */
  #checkRequireTls(): void {
    if (!this.#env.requireTls) return;
    const conn = this.#conn as SmtpConnection;
    if (!conn.tls) throw new Settle('failed', R.requireTlsUnsupported(this.#mta));
    if (!conn.tls.authorized) throw new Settle('deferred', R.requireTlsUnverified(this.#mta));
    if (!this.#caps.has('REQUIRETLS')) throw new Settle('failed', R.requireTlsUnsupported(this.#mta));
  }

  /** EHLO (HELO after a 5xx) or LHLO; records the capabilities. */
  async #hello(): Promise<void> {
    const conn = this.#conn as SmtpConnection;
    const verb = this.#lmtp ? 'LHLO' : 'EHLO';
    conn.send([`${verb} ${this.#o.heloName}`]);
    const r = await conn.read(this.#t.command, verb);
    if (r.code === 250) {
      this.#caps = Capabilities.fromReply(r);
      this.#log?.debug({ capabilities: this.#caps.keywords }, `${verb} accepted`);
      return;
    }
    if (this.#lmtp || r.code < 500) throw this.#fromRemote(r);
    conn.send([`HELO ${this.#o.heloName}`]);
    const helo = await conn.read(this.#t.command, 'HELO');
    if (helo.code !== 250) throw this.#fromRemote(helo);
    this.#caps = Capabilities.none();
  }

  async #authenticate(auth: { readonly user: string; readonly pass: string }): Promise<void> {
    const conn = this.#conn as SmtpConnection;
    if (!conn.tls && !this.#o.allowInsecureAuth) throw new Settle('deferred', R.authWithoutTls(this.#mta));
    const mechanisms = this.#caps.authMechanisms;
    const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
    let r: RemoteReply;
    if (mechanisms.includes('PLAIN')) {
      conn.send([`AUTH PLAIN ${b64(`\0${auth.user}\0${auth.pass}`)}`]);
      r = await conn.read(this.#t.command, 'AUTH');
      if (r.code === 334) {
        // A server that wants the initial response on its own line.
        conn.send([b64(`\0${auth.user}\0${auth.pass}`)]);
        r = await conn.read(this.#t.command, 'AUTH');
      }
    } else if (mechanisms.includes('LOGIN')) {
      conn.send(['AUTH LOGIN']);
      r = await conn.read(this.#t.command, 'AUTH');
      if (r.code === 334) {
        conn.send([b64(auth.user)]);
        r = await conn.read(this.#t.command, 'AUTH');
        if (r.code === 334) {
          conn.send([b64(auth.pass)]);
          r = await conn.read(this.#t.command, 'AUTH');
        }
      }
    } else {
      throw new Settle('deferred', R.authNotOffered(this.#mta));
    }
    if (r.code === 235) {
      this.#log?.debug({ user: auth.user }, 'authenticated');
      return;
    }
    if (r.code === 334) {
      // Mid-exchange: cancel it (RFC 4954 4) and give up on this connection.
      conn.send(['*']);
      throw new Settle('deferred', R.authFailed(this.#mta, 'unexpected challenge'), true);
    }
    if (r.code === 421 || (r.code >= 400 && r.code < 500)) throw this.#fromRemote(r);
    throw new Settle('deferred', R.authFailed(this.#mta, describeReply(r)));
  }

  /** What MAIL FROM says about the body, or a reason not to send it here at all. */
  #bodyParams(): { params: string[]; bdat: boolean } {
    const facts = this.#facts as MessageFacts;
    const env = this.#env;
    const caps = this.#caps;
    const params: string[] = [];
    const max = caps.maxSize;
    if (max !== undefined && facts.size > max) throw new Settle('failed', R.messageTooBig(this.#mta, max));
    if (caps.has('SIZE')) params.push(`SIZE=${facts.size}`);
    let bdat = this.#o.chunking !== false && caps.has('CHUNKING');
    if (env.body === 'BINARYMIME') {
      if (!caps.has('BINARYMIME') || !caps.has('CHUNKING'))
        throw new Settle('failed', R.binaryUnsupported(this.#mta));
      params.push('BODY=BINARYMIME');
      bdat = true;
    } else if (facts.eightBit || env.body === '8BITMIME') {
      if (caps.has('8BITMIME')) params.push('BODY=8BITMIME');
      else if (facts.eightBit) throw new Settle('failed', R.eightBitUnsupported(this.#mta));
    }
    const addresses = [env.from, ...env.recipients.map((r) => r.address)];
    const needUtf8 =
      !addresses.every((a) => ASCII.test(a)) || (env.smtputf8 === true && facts.eightBitHeaders);
    if (needUtf8 || env.smtputf8) {
      if (caps.has('SMTPUTF8')) params.push('SMTPUTF8');
      else if (needUtf8) throw new Settle('failed', R.utf8Unsupported(this.#mta));
    }
    if (env.requireTls) params.push('REQUIRETLS');
    if (caps.has('DSN') && env.dsn) {
      if (env.dsn.ret) params.push(`RET=${env.dsn.ret}`);
      if (env.dsn.envid) params.push(`ENVID=${encodeXtext(env.dsn.envid)}`);
    }
    return { params, bdat };
  }

  #rcptCommand(r: OutboundRecipient): string {
    const params: string[] = [];
    if (this.#caps.has('DSN')) {
      if (r.notify) params.push(`NOTIFY=${r.notify.join(',')}`);
      if (r.orcpt) params.push(`ORCPT=${encodeOrcpt(r.orcpt.type, r.orcpt.address)}`);
    }
    return `RCPT TO:<${r.address}>${params.map((p) => ` ${p}`).join('')}`;
  }

  async #transaction(): Promise<void> {
    const conn = this.#conn as SmtpConnection;
    const env = this.#env;
    const t = this.#t;
    const { params, bdat } = this.#bodyParams();
    const mail = `MAIL FROM:<${env.from}>${params.map((p) => ` ${p}`).join('')}`;
    // Recipients that cannot be put in a command fail alone.
    const sendable: number[] = [];
    env.recipients.forEach((r, i) => {
      if (validPath(r.address) && r.address !== '') sendable.push(i);
      else this.#settle(i, 'failed', R.badRecipient());
    });
    if (sendable.length === 0) return;
    const rcpts = sendable.map((i) => this.#rcptCommand(env.recipients[i] as OutboundRecipient));
    const pipelining = this.#o.pipelining !== false && this.#caps.has('PIPELINING');

    const accepted: number[] = [];
    let dataReply: RemoteReply | undefined;
    const takeRcpt = (i: number, r: RemoteReply) => {
      if (positive(r)) accepted.push(i);
      else if (negative(r)) this.#settle(i, statusOf(r.code), remoteReply(r));
      else this.#settle(i, 'deferred', R.unexpectedReply(this.#mta, describeReply(r)));
    };
    if (pipelining) {
      // RFC 2920: MAIL, every RCPT and DATA in one group; replies come back in order.
      conn.send([mail, ...rcpts, ...(bdat ? [] : ['DATA'])]);
      const mailReply = await conn.read(t.mail, 'MAIL');
      const rcptReplies: RemoteReply[] = [];
      for (const _ of sendable) rcptReplies.push(await conn.read(t.rcpt, 'RCPT'));
      if (!bdat) dataReply = await conn.read(t.dataInit, 'DATA');
      if (!positive(mailReply)) {
        if (dataReply?.code === 354) await this.#emptyData();
        throw this.#fromRemote(mailReply);
      }
      for (const [k, i] of sendable.entries()) takeRcpt(i, rcptReplies[k] as RemoteReply);
      if (accepted.length === 0) {
        if (dataReply?.code === 354) await this.#emptyData();
        return;
      }
    } else {
      conn.send([mail]);
      const mailReply = await conn.read(t.mail, 'MAIL');
      if (!positive(mailReply)) throw this.#fromRemote(mailReply);
      for (const [k, i] of sendable.entries()) {
        conn.send([rcpts[k] as string]);
        takeRcpt(i, await conn.read(t.rcpt, 'RCPT'));
      }
      if (accepted.length === 0) return;
      if (!bdat) {
        conn.send(['DATA']);
        dataReply = await conn.read(t.dataInit, 'DATA');
      }
    }
    this.#log?.debug(
      { accepted: accepted.length, of: env.recipients.length, bdat, pipelining },
      'envelope sent',
    );

    let final: RemoteReply;
    if (bdat) {
      const failed = await this.#sendChunks(pipelining);
      if (failed) {
        for (const i of accepted) this.#settle(i, statusOf(failed.reply.code), remoteReply(failed.reply));
        if (failed.abort) throw new Settle('deferred', R.connectionLost(this.#mta), true);
        return;
      }
    } else {
      const r = dataReply as RemoteReply;
      if (r.code !== 354) {
        const settle = this.#fromRemote(r);
        for (const i of accepted) this.#settle(i, settle.status, settle.reply);
        return;
      }
      await this.#sendData();
    }
    if (this.#lmtp) {
      // RFC 2033 4.2: one reply per accepted recipient, in RCPT order.
      for (const i of accepted) {
        final = await conn.read(t.dataFinal, 'the end of data');
        this.#settle(i, statusOf(final.code), remoteReply(final));
      }
    } else {
      final = await conn.read(t.dataFinal, 'the end of data');
      for (const i of accepted) this.#settle(i, statusOf(final.code), remoteReply(final));
    }
  }

  /** DATA got 354 though no recipient was accepted (RFC 2920 3.1): end it at once. */
  async #emptyData(): Promise<void> {
    const conn = this.#conn as SmtpConnection;
    await conn.write([Buffer.from('.\r\n')], this.#t.dataBlock);
    await conn.read(this.#t.dataFinal, 'the end of data');
  }

  async #sendData(): Promise<void> {
    const conn = this.#conn as SmtpConnection;
    try {
      for await (const pieces of dotStuffed(this.#env.stream())) await conn.write(pieces, this.#t.dataBlock);
    } catch (err) {
      // Never send the terminator after a partial message: close instead.
      if (err instanceof ConnectionError) throw err;
      throw new Settle('deferred', R.readFailed(), true);
    }
  }

  /**
   * BDAT chunks (RFC 3030). With PIPELINING they go out without waiting; the
   * replies are checked as they come. The reply to the last chunk is left for
   * the caller (one per recipient with LMTP). Returns a failure, if any.
   */
  async #sendChunks(pipelining: boolean): Promise<{ reply: RemoteReply; abort: boolean } | undefined> {
    const conn = this.#conn as SmtpConnection;
    const size = Math.max(1, this.#o.chunkSize ?? 1024 * 1024);
    let outstanding = 0;
    try {
      for await (const { data, last } of chunks(this.#env.stream(), size)) {
        if (pipelining) {
          for (let r = conn.poll(); r; r = conn.poll()) {
            outstanding--;
            if (!positive(r)) return { reply: r, abort: true };
          }
        }
        await conn.write(
          [Buffer.from(`BDAT ${data.length}${last ? ' LAST' : ''}\r\n`), data],
          this.#t.dataBlock,
        );
        if (last) break;
        if (pipelining) outstanding++;
        else {
          const r = await conn.read(this.#t.dataBlock, 'BDAT');
          if (!positive(r)) return { reply: r, abort: false };
        }
      }
    } catch (err) {
      if (err instanceof ConnectionError) throw err;
      throw new Settle('deferred', R.readFailed(), true);
    }
    for (; outstanding > 0; outstanding--) {
      const r = await conn.read(this.#t.dataBlock, 'BDAT');
      if (!positive(r)) return { reply: r, abort: true };
    }
    return undefined;
  }
}

/** An address that can go between `<` and `>` in a command line. */
function validPath(address: string): boolean {
  return (
    !UNSAFE.test(address) && !/[<>]/.test(address.replace(/"(?:[^"\\]|\\.)*"/g, '')) && address.length <= 998
  );
}
