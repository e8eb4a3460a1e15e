/**
 * Wake-ups between nodes sharing one queue: a node that queues mail (or
 * releases or retries a message) sends a NOTIFY; every other node LISTENs on
 * a connection of its own and kicks its scheduler. The listening connection
 * reconnects by itself (with a growing pause), and a reconnection counts as a
 * wake-up, since notifications sent while it was down are lost.
 */
import pg from 'pg';
import type { Logger } from '../../core/types.ts';

/** The channel every mailframe queue uses; the payload names the schema and the sending node. */
export const WAKE_CHANNEL = 'mailframe_queue';

/** The NOTIFY payload of node `nodeId` on queue schema `schema`. */
export function wakePayload(schema: string, nodeId: string): string {
  return `${schema}\n${nodeId}`;
}

export interface WakeListenerOptions {
  readonly connection: pg.ClientConfig;
  readonly schema: string;
  readonly nodeId: string;
  readonly log: Logger;
  readonly onWake: () => void;
}

const RETRY_MIN = 500;
const RETRY_MAX = 30_000;

export class WakeListener {
  readonly #o: WakeListenerOptions;
  #client: pg.Client | undefined;
  #timer: NodeJS.Timeout | undefined;
  #retry = RETRY_MIN;
  #closed = false;

  constructor(opts: WakeListenerOptions) {
    this.#o = opts;
  }

  /** Connect and LISTEN; rejects if the first connection fails (start-up then fails too). */
  async start(): Promise<void> {
    await this.#connect();
  }

  async #connect(): Promise<void> {
    const client = new pg.Client(this.#o.connection);
    client.on('error', (err) => {
      this.#o.log.warn({ err }, 'queue wake-up connection to PostgreSQL failed; reconnecting');
      this.#lost(client);
    });
    client.on('end', () => this.#lost(client));
    client.on('notification', (n) => {
      if (n.channel !== WAKE_CHANNEL || n.payload === undefined) return;
      const nl = n.payload.indexOf('\n');
      if (nl < 0 || n.payload.slice(0, nl) !== this.#o.schema) return;
      if (n.payload.slice(nl + 1) === this.#o.nodeId) return;
      this.#o.onWake();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${WAKE_CHANNEL}`);
    } catch (err) {
      client.removeAllListeners('end');
      await client.end().catch(() => {});
      throw err;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#retry = RETRY_MIN;
  }

  #lost(client: pg.Client): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    client.removeAllListeners('end');
    client.end().catch(() => {});
    this.#schedule();
  }

  #schedule(): void {
    if (this.#closed || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#connect().then(
        () => {
          this.#o.log.info('queue wake-up connection to PostgreSQL restored');
          // Notifications sent while we were away are lost: look now.
          this.#o.onWake();
        },
        (err: unknown) => {
          this.#o.log.debug({ err }, 'queue wake-up connection: PostgreSQL still unreachable');
          this.#retry = Math.min(this.#retry * 2, RETRY_MAX);
          this.#schedule();
        },
      );
    }, this.#retry);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const client = this.#client;
    this.#client = undefined;
    if (client) {
      client.removeAllListeners('end');
      await client.end().catch(() => {});
    }
  }
}
