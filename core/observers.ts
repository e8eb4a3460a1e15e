/**
 * Observers: what the core lets plugins watch without taking part (metrics,
 * tracing, live views). Unlike hooks they never change the dialogue: each is a
 * synchronous call after the fact, and an observer that throws is logged and
 * ignored. A server with no observer of an event pays one field test where the
 * event happens.
 *
 *   api.observe({ reply: (session, r) => counts.add(r.code) });
 */
import type { Logger } from 'pino';
import type { Reply } from './reply.ts';
import type { Session, TlsInfo, Transaction } from './types.ts';

/** How a transaction ended: queued (250 sent), refused after the message, RSET/EHLO/STARTTLS, disconnect. */
export type TransactionOutcome = 'queued' | 'rejected' | 'rset' | 'disconnect';

export interface TransactionEnd {
  readonly outcome: TransactionOutcome;
  /** Octets of the message received (after unstuffing), when one was received. */
  readonly size?: number;
}

/** What a hook call of one plugin came to, as its tap wrapper saw it. */
export type HookOutcome = 'ok' | 'failure' | 'timeout';

export interface ServerObserver {
  /** A session began (after the connection limits let it in) or its connection closed. */
  connection?(session: Session, event: 'open' | 'close'): void;
  /**
   * A reply was queued for the client. `verb` is the upper-case command it
   * answers (`DATA` for the reply after the message), undefined for the
   * greeting and replies no command asked for (timeouts, shutdown).
   */
  reply?(session: Session, reply: Reply, verb: string | undefined): void;
  /** TLS is in effect (implicit TLS or STARTTLS). */
  tls?(session: Session, info: TlsInfo): void;
  /** A transaction ended. `tx.notes` still holds what plugins recorded about it. */
  transaction?(tx: Transaction, end: TransactionEnd): void;
  /**
   * One plugin's tap on one hook answered with a promise, which settled (or
   * timed out) `seconds` after the tap returned it. Taps that answer
   * synchronously are not reported (no clock is read for them: their count and
   * failures are in `status.hookMetrics()`).
   */
  hook?(plugin: string, hook: string, seconds: number, outcome: HookOutcome): void;
}

type Fn<K extends keyof ServerObserver> = NonNullable<ServerObserver[K]>;

const EVENTS = ['connection', 'reply', 'tls', 'transaction', 'hook'] as const;

/**
 * The server's observers, one field per event: undefined while nobody observes
 * it (call sites test the field), else one function that calls each observer.
 */
export class Observers {
  connection: Fn<'connection'> | undefined;
  reply: Fn<'reply'> | undefined;
  tls: Fn<'tls'> | undefined;
  transaction: Fn<'transaction'> | undefined;
  hook: Fn<'hook'> | undefined;
  readonly #lists = new Map<string, Array<(...args: never[]) => void>>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Add an observer; the returned function removes it. `owner` names it in the log when it throws. */
  add(owner: string, observer: ServerObserver): () => void {
    const added: Array<[string, (...args: never[]) => void]> = [];
    for (const event of EVENTS) {
      const fn = observer[event] as ((...args: never[]) => void) | undefined;
      if (!fn) continue;
      const guarded = (...args: never[]) => {
        try {
          fn.apply(observer, args);
        } catch (err) {
          this.#log.error({ plugin: owner, observer: event, err }, 'observer failed');
        }
      };
      added.push([event, guarded]);
      this.#lists.set(event, [...(this.#lists.get(event) ?? []), guarded]);
      this.#rebuild(event);
    }
    return () => {
      for (const [event, fn] of added) {
        this.#lists.set(
          event,
          (this.#lists.get(event) ?? []).filter((f) => f !== fn),
        );
        this.#rebuild(event);
      }
    };
  }

  #rebuild(event: string): void {
    const list = this.#lists.get(event) ?? [];
    const fan =
      list.length === 0
        ? undefined
        : list.length === 1
          ? list[0]
          : (...args: never[]) => {
              for (const f of list) f(...args);
            };
    (this as unknown as Record<string, unknown>)[event] = fan;
  }
}
