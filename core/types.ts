/**
 * The values hooks receive: sessions, transactions, addresses and messages.
 * Plugins extend the `*Notes` and `*Attributes` interfaces by declaration merging:
 *
 *   declare module 'mailframe' { interface TransactionNotes { spf?: CheckResult } }
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';

export type { Logger };

/** Per-connection scratch space for plugins (extend by declaration merging). */
// biome-ignore lint/suspicious/noEmptyInterface: extended by plugins through declaration merging
export interface SessionNotes {}
/** Per-transaction scratch space for plugins (extend by declaration merging). */
// biome-ignore lint/suspicious/noEmptyInterface: extended by plugins through declaration merging
export interface TransactionNotes {}
/**
 * Envelope data that travels with the message into the queue and out to delivery
 * (DSN RET/ENVID, REQUIRETLS, body type ...). Must stay JSON-serialisable.
 */
export interface EnvelopeAttributes {
  /** BODY= parameter value as accepted, e.g. `8BITMIME`. */
  body?: string;
  /** The transaction used SMTPUTF8 (RFC 6531). */
  smtputf8?: boolean;
}
/** Per-recipient envelope data kept in the queue (DSN NOTIFY/ORCPT ...). JSON-serialisable. */
// biome-ignore lint/suspicious/noEmptyInterface: extended by plugins through declaration merging
export interface RecipientAttributes {}

/** An RFC 5321 mailbox as received. */
export interface Address {
  /** Local part exactly as received (dot-string or quoted string, case preserved). */
  readonly localPart: string;
  /** Domain as received: a name (possibly U-labels) or an address literal with brackets. */
  readonly domain: string;
  /** Lower-case ASCII (A-label) form of the domain; the literal itself for address literals. */
  readonly asciiDomain: string;
  /** What kind of domain part this is. */
  readonly domainKind: 'name' | 'ipv4' | 'ipv6' | 'general';
  /** `localPart@domain`. */
  readonly address: string;
  /** True when the local part or domain contains non-ASCII characters. */
  readonly unicode: boolean;
}

/** ESMTP parameters of MAIL/RCPT: upper-cased keyword to value (`true` for a keyword without `=`). */
export type Params = ReadonlyMap<string, string | true>;

/** The MAIL FROM argument: `address` is `null` for the null reverse-path `<>`. */
export interface ReversePath {
  readonly address: Address | null;
  readonly params: Params;
}

/** The RCPT TO argument. The special `<Postmaster>` has domain `''`. */
export interface ForwardPath {
  readonly address: Address;
  readonly params: Params;
}

export interface Recipient extends ForwardPath {
  readonly attributes: RecipientAttributes;
}

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

export interface TlsInfo {
  /** e.g. `TLSv1.3` */
  readonly protocol: string;
  /** e.g. `TLS_AES_256_GCM_SHA384` */
  readonly cipher: string;
  /** SNI name the client asked for, if any. */
  readonly servername?: string;
  /** Whether the peer presented a certificate that verified. */
  readonly peerVerified: boolean;
}

export interface Helo {
  readonly verb: 'EHLO' | 'HELO' | 'LHLO';
  /** The domain or address literal the client gave. */
  readonly domain: string;
}

export interface ListenerInfo {
  readonly name: string;
  /** `mx` (port 25, inbound) or `submission` (587/465, AUTH required). */
  readonly role: 'mx' | 'submission';
  /** Implicit TLS from the first byte (port 465). */
  readonly implicitTls: boolean;
  /**
   * `smtp`, or `lmtp` (RFC 2033): the client greets with LHLO, and after the
   * message each accepted recipient gets its own reply.
   */
  readonly protocol: 'smtp' | 'lmtp';
}

/** What a plugin sees of a connection. */
export interface Session {
  readonly id: string;
  readonly listener: ListenerInfo;
  readonly remote: Endpoint;
  readonly local: Endpoint;
  /** This server's host name, as in the greeting. */
  readonly hostname: string;
  readonly connectedAt: Date;
  readonly helo: Helo | undefined;
  /** Set once TLS is in effect (implicit or after STARTTLS). */
  readonly tls: TlsInfo | undefined;
  /** Authenticated identity (set by an AUTH plugin through `authenticate`). */
  readonly user: string | undefined;
  /** The open transaction, between MAIL and the end of DATA/RSET. */
  readonly transaction: Transaction | undefined;
  /** Number of transactions completed (accepted or rejected) on this connection. */
  readonly transactionCount: number;
  readonly notes: SessionNotes;
  readonly log: Logger;
  /** Record the authenticated identity (AUTH plugins). */
  authenticate(user: string): void;
  /** Whether replies carry RFC 3463 enhanced status codes (the ENHANCEDSTATUSCODES plugin turns this on). */
  enhancedStatusCodes: boolean;
}

/** One mail transaction: MAIL, RCPT..., DATA/BDAT. */
export interface Transaction {
  readonly id: string;
  readonly session: Session;
  readonly from: ReversePath;
  /** Recipients accepted so far. */
  readonly recipients: readonly Recipient[];
  /**
   * Allow UTF-8 in addresses for this transaction (RFC 6531). The SMTPUTF8
   * plugin sets this when MAIL carries the SMTPUTF8 parameter.
   */
  utf8: boolean;
  /**
   * Size in octets the client announced for the message (RFC 1870 `SIZE=`),
   * set by the plugin that handles that parameter; undefined when none was
   * announced. Plugins that store the message may reserve room for it.
   */
  declaredSize: number | undefined;
  readonly attributes: EnvelopeAttributes;
  readonly notes: TransactionNotes;
  readonly log: Logger;
}

/** A header field to prepend, as a complete unfolded or folded line without the trailing CRLF. */
export type HeaderField = string;

/** A received message, spooled in memory (small) or on disk (large). */
export interface Message {
  /**
   * Octets received after unstuffing and line-ending normalisation, excluding
   * prepended headers (and fields `removeFields` took out).
   */
  readonly size: number;
  /** Header fields on top of the message, top first: those from `prepend`, then the core's Received and the `headers` hook's. */
  readonly prepended: readonly HeaderField[];
  /** Whether the data contained bare CR or LF line endings (normalised to CRLF). */
  readonly hadBareLineEndings: boolean;
  /**
   * Put header fields on top of the message, above those already prepended
   * (for fields that need the whole message first, such as a DKIM signature).
   * Streams opened afterwards include them; `size` does not count them.
   */
  prepend(fields: readonly HeaderField[]): void;
  /**
   * Take fields out of the header section the message arrived with (not the
   * prepended ones): each field for which `remove(name, field)` is true, with
   * `name` in lower case and `field` the whole field as received (folded, no
   * final CRLF). Only the header section is read. Streams opened afterwards,
   * `read`, `saveTo`, `size` and the `queue` hook see the message without
   * them; earlier `message` taps saw it as it arrived. Resolves to how many
   * fields went. For fields a receiver must not pass on, such as an
   * Authentication-Results claiming this server's authserv-id (RFC 8601 5).
   */
  removeFields(remove: (name: string, field: string) => boolean): Promise<number>;
  /** The whole message, prepended headers first. A new stream each call. */
  stream(): Readable;
  /** The whole message as a Buffer: only for small messages, throws above `maxBytes`. */
  read(maxBytes?: number): Promise<Buffer>;
  /**
   * What `read` gives, at once: when the message is held in memory (it did
   * not spill to disk) and is no larger than `maxBytes`; otherwise undefined
   * (use `read` or `stream`). For checks that can finish without a promise.
   */
  readNow(maxBytes?: number): Buffer | undefined;
  /**
   * Write the whole message, prepended fields first, to a new file at `path`
   * (which must not exist) and fsync it unless `fsync` is false. Always a copy.
   */
  saveTo(path: string, opts?: { fsync?: boolean }): Promise<void>;
}

/** What a queue plugin answers: the message is stored durably under `id`. */
export interface QueueResult {
  readonly id: string;
}

/** Result of checking credentials (the `auth` hook). */
export interface AuthResult {
  readonly ok: boolean;
  /** Identity to record when ok; defaults to the username. */
  readonly user?: string;
}

/** The credentials an AUTH mechanism decoded. */
export interface AuthRequest {
  readonly mechanism: string;
  readonly username: string;
  /** Password for PLAIN/LOGIN, bearer token for XOAUTH2/OAUTHBEARER. */
  readonly secret: string;
  /** Authorization identity (PLAIN authzid), if different from the username. */
  readonly authzid?: string;
}

/** A message handed to delivery: the queue creates these, `deliver` plugins claim them. */
export interface DeliveryJob {
  /** Queue id of the message (several jobs may share it: one per destination). */
  readonly id: string;
  /** Recipient domain (ASCII, lower case) all of this job's recipients share. */
  readonly destination: string;
  /**
   * Delivery plugin instance chosen by the queue's routing table, or undefined
   * when any delivery plugin that serves `destination` may claim the job.
   */
  readonly route: string | undefined;
  /** Reverse-path (`''` for the null reverse-path). */
  readonly from: string;
  readonly recipients: readonly DeliveryRecipient[];
  readonly attributes: EnvelopeAttributes;
  readonly attempts: number;
  /**
   * When the message arrived (ms since the epoch, server clock), when the
   * queue knows it. A message that arrived before this server started may
   * have been delivered by the run before, killed before its queue recorded
   * the delivery: a plugin that can find its own earlier copy checks for it.
   */
  readonly receivedAt?: number;
  /** Octets of the message as `stream()` yields it, when the queue knows it. */
  readonly size?: number;
  /** The message, a new stream each call. */
  stream(): Readable;
  readonly log: Logger;
}

export interface DeliveryRecipient {
  readonly address: string;
  readonly attributes: RecipientAttributes;
}

/** Per-recipient outcome of a delivery attempt. */
export interface RecipientResult {
  readonly recipient: string;
  readonly status: 'delivered' | 'deferred' | 'failed';
  /** The remote (or local) reply behind the status. */
  readonly reply?: { readonly code: number; readonly enhanced?: string; readonly text: string };
  /** The server that gave the reply: a host name (an MX host), or `host:port`. */
  readonly mta?: string;
  /** The IP address connected to, when `mta` is a name resolved through DNS. */
  readonly mtaAddress?: string;
  /**
   * For a delivered recipient, who answers a DSN SUCCESS request (RFC 3461 4.1, 6.2):
   * `final` (delivered here: the queue reports `delivered`), `relayed` (the next hop
   * does not offer DSN: the queue reports `relayed`), `passed-on` (the next hop
   * accepted the NOTIFY parameters and reports itself: the queue sends nothing).
   * Absent means `final`.
   */
  readonly dsnHandoff?: 'final' | 'relayed' | 'passed-on';
}

export interface DeliveryReport {
  readonly results: readonly RecipientResult[];
}
