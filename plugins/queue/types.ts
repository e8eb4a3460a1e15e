/**
 * The queue's contracts, independent of where messages are stored.
 *
 * - `QueueStore` is what a storage backend implements (queue-fs today; a
 *   PostgreSQL backend later: leases map to `FOR UPDATE SKIP LOCKED` rows).
 * - `QueueService` is what a running queue publishes to other plugins as the
 *   `queue` service: enqueue and management, plus `runDue` for tests. Leasing
 *   and settling stay private to the queue's own scheduler.
 */
import type { Readable } from 'node:stream';
import type { EnvelopeAttributes, RecipientAttributes } from '../../core/types.ts';
import type { DestinationRoom } from './due-index.ts';

export type { DestinationRoom };

/** A reply as recorded with a recipient's last attempt. */
export interface ReplyRecord {
  readonly code: number;
  readonly enhanced?: string;
  readonly text: string;
}

/** Where a queued message came from (shown by `queue show`). */
export type MessageSource =
  | {
      readonly kind: 'smtp';
      readonly client: string;
      readonly helo?: string;
      readonly user?: string;
      /** Transaction id (for finding the log lines). */
      readonly tid?: string;
    }
  | { readonly kind: 'dsn'; readonly about: string }
  | { readonly kind: 'local'; readonly by: string };

export interface RecipientInput {
  /** The mailbox as received (`local@domain`). */
  readonly address: string;
  /** Lower-case ASCII (A-label) domain, or the address literal: the destination jobs are split by. */
  readonly domain: string;
  readonly attributes: RecipientAttributes;
}

/** What `enqueue` stores: the envelope of one message. */
export interface EnvelopeInput {
  /** Reverse-path; `''` is the null reverse-path `<>` (bounces). */
  readonly from: string;
  readonly recipients: readonly RecipientInput[];
  readonly attributes: EnvelopeAttributes;
  /** Arrival time (ms since the epoch, from the server clock). */
  readonly receivedAt: number;
  readonly source?: MessageSource;
}

/** The message octets: a buffer, or a size and a stream factory (a new stream each call). */
export type MessageContent = Buffer | { readonly size: number; stream(): Readable };

export type RecipientStatus = 'pending' | 'delivered' | 'failed';

/** A recipient's delivery state, kept durably per recipient. */
export interface RecipientState {
  readonly status: RecipientStatus;
  /** Delivery attempts made so far. */
  readonly attempts: number;
  /** When the next attempt is due (pending recipients). */
  readonly nextAttemptAt: number;
  readonly lastAttemptAt?: number;
  /** The reply behind the current status (the last attempt's). */
  readonly reply?: ReplyRecord;
  /** The host that gave the reply, when it was a remote one. */
  readonly mta?: string;
  /** The address of that host connected to, when it was found through DNS (MX delivery). */
  readonly mtaAddress?: string;
  /** A DELAY notification (RFC 3464 `Action: delayed`) went out for this recipient. */
  readonly warned?: boolean;
}

export interface LeasedRecipient {
  /** Position in the envelope's recipient list (the key for `settle`). */
  readonly index: number;
  readonly address: string;
  readonly attributes: RecipientAttributes;
  readonly attempts: number;
  readonly warned: boolean;
}

/**
 * One job handed to the scheduler: a message's pending recipients at one
 * destination. While leased it is not offered again; `settle` ends the lease.
 */
export interface Lease {
  readonly id: string;
  readonly destination: string;
  readonly from: string;
  readonly attributes: EnvelopeAttributes;
  readonly receivedAt: number;
  /** Octets of the message. */
  readonly size: number;
  readonly recipients: readonly LeasedRecipient[];
  /** The message, a new stream each call. */
  stream(): Readable;
}

/** The result of an attempt for one leased recipient. */
export interface RecipientOutcome {
  readonly index: number;
  readonly status: 'delivered' | 'deferred' | 'failed';
  readonly reply?: ReplyRecord;
  readonly mta?: string;
  readonly mtaAddress?: string;
  /** Deferred: when to try again. */
  readonly nextAttemptAt?: number;
  /** A DELAY notification was sent with this attempt. */
  readonly warned?: boolean;
}

/**
 * `held`: an operator stopped it (`hold`). `quarantined`: a policy action
 * set it aside on arrival (`attributes.quarantine`); it waits for an
 * operator to `release` (deliver) or `delete` it.
 */
export type QueueState = 'active' | 'deferred' | 'held' | 'quarantined';

export interface QueueFilter {
  /** Only messages in this state (`active`: being delivered now; `deferred`: tried at least once). */
  readonly state?: QueueState;
  /** Case-insensitive substring of the sender or a recipient. */
  readonly search?: string;
  /** Only messages with a pending recipient at this destination (a domain, case-insensitive). */
  readonly destination?: string;
  /** Skip this many matching messages first (paging with `limit`). */
  readonly offset?: number;
  /** At most this many, oldest first. */
  readonly limit?: number;
}

export interface QueueSummary {
  readonly id: string;
  readonly from: string;
  readonly receivedAt: number;
  readonly size: number;
  readonly state: QueueState | 'queued';
  readonly recipients: number;
  /** Recipients still to be delivered. */
  readonly pending: number;
  /** Most attempts made for any pending recipient. */
  readonly attempts: number;
  /** Earliest next attempt of a pending recipient. */
  readonly nextAttemptAt: number | undefined;
  /** The last reply a pending recipient got. */
  readonly lastReply: ReplyRecord | undefined;
  /** While quarantined: the check and result that put it there (its `attributes.quarantine`). */
  readonly quarantine?: { readonly check: string; readonly result: string };
}

export interface RecipientDetail extends RecipientState {
  readonly address: string;
  readonly domain: string;
  readonly attributes: RecipientAttributes;
}

export interface QueueDetail extends QueueSummary {
  readonly attributes: EnvelopeAttributes;
  readonly source: MessageSource | undefined;
  readonly recipientStates: readonly RecipientDetail[];
  /** The message's header section (truncated to 64 KiB). */
  readonly headers: string;
}

export interface QueueStats {
  readonly messages: number;
  readonly held: number;
  readonly quarantined: number;
  readonly deferred: number;
  /** Jobs being delivered right now. */
  readonly active: number;
  readonly recipients: { readonly pending: number };
  readonly bytes: number;
  readonly oldestReceivedAt: number | undefined;
  readonly nextAttemptAt: number | undefined;
  /** Destinations with the most pending recipients (up to 10). */
  readonly destinations: ReadonlyArray<{ readonly destination: string; readonly pending: number }>;
}

/** Management operations (the CLI's verbs). Every one that names a message answers false if there is none. */
export interface QueueManagement {
  list(filter?: QueueFilter): Promise<QueueSummary[]>;
  show(id: string): Promise<QueueDetail | undefined>;
  /** Keep the message but stop scheduling it (a quarantined one stays quarantined). */
  hold(id: string): Promise<boolean>;
  /** Schedule a held or quarantined message again (its recorded retry times stand): release = deliver normally. */
  release(id: string): Promise<boolean>;
  /** Make every pending recipient due now (a held or quarantined message stays so). */
  retryNow(id: string): Promise<boolean>;
  /** Remove the message without delivering or bouncing it. */
  delete(id: string): Promise<boolean>;
  stats(): Promise<QueueStats>;
  /** The queued message's octets (headers and body, as stored), or undefined if there is none. */
  content(id: string): Promise<{ readonly size: number; stream(): Readable } | undefined>;
  /**
   * Resolve when the store can be used, reject saying why when not (its
   * directory is gone, its database does not answer): readiness probes.
   */
  check(): Promise<void>;
}

/** What a storage backend implements. */
export interface QueueStore extends QueueManagement {
  /**
   * Store a message durably; resolves with its queue id only once it would
   * survive a crash. A message whose `attributes.quarantine` is set is stored
   * quarantined, in the same durable write: never offered by `leaseDue` until
   * released.
   */
  enqueue(envelope: EnvelopeInput, content: MessageContent): Promise<string>;
  /**
   * Lease up to `limit` jobs due at `now`, taking at most the room each
   * destination has left. Held or quarantined messages and leased jobs are never returned.
   * Fewer than `limit` means nothing more can be leased now: the scheduler
   * asks again only on its next wake-up (an enqueue, a finished job, or the
   * time `nextDue` gives).
   */
  leaseDue(now: number, limit: number, room?: DestinationRoom): Promise<Lease[]>;
  /** When the next job is due at a destination with room (undefined: none waiting). */
  nextDue(room?: DestinationRoom): Promise<number | undefined>;
  /**
   * Record an attempt's per-recipient results durably and end the lease.
   * Delivered and failed are final; deferred recipients wait for `nextAttemptAt`.
   * A message whose recipients are all final is removed.
   */
  settle(lease: Lease, outcomes: readonly RecipientOutcome[], now: number): Promise<void>;
  /** Called when a job may have become due earlier than the scheduler knows (enqueue, release, retry). */
  onWake(listener: () => void): void;
  close(): Promise<void>;
}

/** The running queue, published as the `queue` service. */
export interface QueueService extends QueueManagement {
  /** Store a message durably (bounces, plugins that generate mail). */
  enqueue(envelope: EnvelopeInput, content: MessageContent): Promise<string>;
  /** Start every job due now and wait until they (and jobs they made due, such as bounces) finish. */
  runDue(): Promise<void>;
}

declare module '../../core/plugin.ts' {
  interface Services {
    queue: QueueService;
  }
}
