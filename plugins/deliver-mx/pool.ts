/**
 * Connections per destination, as Postfix's qmgr and connection cache do it:
 *
 * - a connection that finished a transaction waits idle (up to `idleTimeout`)
 *   for the next message to the same destination, which takes it after a RSET;
 *   it carries at most `maxMessagesPerConnection` transactions;
 * - at most `perDestination` connections to one destination (idle ones
 *   included), and at most `total` in use at once overall (busy or being
 *   opened: Postfix's process limit); idle connections wait apart, as in its
 *   connection cache: at most `maxIdle` of them (the longest idle is closed
 *   first), each for at most `idleTimeout`;
 * - slow start: a destination starts with `initialConcurrency` connections and
 *   gains one per successful connection, loses one per failed one;
 * - back-off: after `failureThreshold` connection failures in a row the
 *   destination is dead for `backoff` ms: its jobs are deferred without
 *   connecting, then one connection probes it again;
 * - `rateDelay`: the least time between two transactions to one destination.
 */
import type { Clock } from '../../core/plugin.ts';
import type { ClientConnection } from '../outbound/smtp-client.ts';

export interface PoolLimits {
  readonly perDestination: number;
  readonly total: number;
  readonly initialConcurrency: number;
  readonly maxMessagesPerConnection: number;
  readonly idleTimeout: number;
  readonly maxIdle: number;
  readonly failureThreshold: number;
  readonly backoff: number;
  readonly rateDelay: number;
}

interface Idle {
  readonly conn: ClientConnection;
  readonly timer: NodeJS.Timeout;
  readonly destination: Destination;
}

class Destination {
  readonly name: string;
  readonly idle: Idle[] = [];
  /** Connections held: busy, idle, or being opened. */
  open = 0;
  window: number;
  failures = 0;
  deadUntil = 0;
  nextSendAt = 0;
  /** Jobs inside `take` for this destination (a waiting job keeps its entry alive). */
  users = 0;
  constructor(name: string, window: number) {
    this.name = name;
    this.window = window;
  }
}

/** What `take` gives: a ready connection, leave to open one, or "dead until". */
export type Taken =
  | { readonly kind: 'connection'; readonly conn: ClientConnection }
  | { readonly kind: 'slot' }
  | { readonly kind: 'dead'; readonly until: number };

export class ConnectionPool {
  readonly #limits: PoolLimits;
  readonly #clock: Clock;
  readonly #destinations = new Map<string, Destination>();
  /** Connections in use or being opened, every destination. */
  #busy = 0;
  /** Every idle connection, the longest idle first. */
  readonly #idle = new Set<Idle>();
  #waiters: Array<() => void> = [];
  #closed = false;
  readonly #quitting = new Set<Promise<void>>();

  readonly #sweeper: NodeJS.Timeout;

  constructor(limits: PoolLimits, clock: Clock) {
    this.#limits = limits;
    this.#clock = clock;
    // Forget destinations with nothing open, nobody waiting and no back-off running,
    // so a long-running server does not keep an entry for every domain it ever saw.
    this.#sweeper = setInterval(() => this.sweep(), Math.max(limits.idleTimeout, 60_000));
    this.#sweeper.unref();
  }

  /** Drop the entries of idle destinations (slow start starts over for them). Runs every minute. */
  sweep(): void {
    const now = this.#clock.now();
    for (const [name, d] of this.#destinations) {
      if (d.open === 0 && d.users === 0 && d.deadUntil <= now && d.nextSendAt <= now) {
        this.#destinations.delete(name);
      }
    }
  }

  /** Destinations the pool keeps state for (for tests and metrics). */
  get destinations(): number {
    return this.#destinations.size;
  }

  /** Connections in use overall, and held (busy, idle or opening) and idle for one destination: for metrics. */
  stats(destination: string): { busy: number; open: number; idle: number } {
    const d = this.#destinations.get(destination);
    return { busy: this.#busy, open: d?.open ?? 0, idle: d?.idle.length ?? 0 };
  }

  #dest(name: string): Destination {
    let d = this.#destinations.get(name);
    if (!d) {
      d = new Destination(name, Math.min(this.#limits.initialConcurrency, this.#limits.perDestination));
      this.#destinations.set(name, d);
    }
    return d;
  }

  /**
   * An idle connection to `destination` (checked with RSET), or leave to open
   * a new one (then call `opened` or `failed`), waiting for room if need be.
   */
  async take(destination: string): Promise<Taken> {
    const d = this.#dest(destination);
    d.users++;
    try {
      return await this.#take(d);
    } finally {
      d.users--;
    }
  }

  async #take(d: Destination): Promise<Taken> {
    for (;;) {
      if (this.#closed) return { kind: 'dead', until: this.#clock.now() };
      if (d.deadUntil > this.#clock.now()) return { kind: 'dead', until: d.deadUntil };
      if (this.#busy < this.#limits.total) {
        const idle = d.idle.pop();
        if (idle) {
          clearTimeout(idle.timer);
          this.#idle.delete(idle);
          this.#busy++;
          if (await idle.conn.reset()) return { kind: 'connection', conn: idle.conn };
          // Gone while idle (the server timed it out): its place is ours to open a new one.
          idle.conn.close();
          return { kind: 'slot' };
        }
        if (d.open < Math.min(d.window, this.#limits.perDestination)) {
          d.open++;
          this.#busy++;
          return { kind: 'slot' };
        }
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** A new connection opened: the destination is alive, its window grows. */
  opened(destination: string): void {
    const d = this.#dest(destination);
    d.failures = 0;
    d.deadUntil = 0;
    d.window = Math.min(d.window + 1, this.#limits.perDestination);
    // A job waiting for room at this destination may have it now.
    this.#wake();
  }

  /**
   * Opening failed on every exchanger (`connectionFailure`: some connection
   * was tried and failed, rather than nothing to connect to). Gives the slot back.
   */
  failed(destination: string, connectionFailure: boolean): void {
    const d = this.#dest(destination);
    if (connectionFailure) {
      d.failures++;
      d.window = Math.max(1, d.window - 1);
      if (d.failures >= this.#limits.failureThreshold) {
        d.deadUntil = this.#clock.now() + this.#limits.backoff;
        d.window = 1;
      }
    }
    this.#busy--;
    this.#free(d);
  }

  /** Whether `conn` may carry another transaction (`maxMessagesPerConnection`, LIMITS MAILMAX). */
  carriesMore(conn: ClientConnection): boolean {
    const max = Math.min(this.#limits.maxMessagesPerConnection, mailMax(conn) ?? Number.POSITIVE_INFINITY);
    return conn.transactions < max;
  }

  /** The job is done with `conn`: keep it idle for the next message, or close it. */
  release(destination: string, conn: ClientConnection): void {
    const d = this.#dest(destination);
    const keep = this.#limits.idleTimeout > 0 && this.#limits.maxIdle > 0;
    if (!this.#closed && keep && conn.reusable && this.carriesMore(conn)) {
      const timer = setTimeout(() => this.#drop(entry), this.#limits.idleTimeout);
      timer.unref();
      const entry: Idle = { conn, timer, destination: d };
      d.idle.push(entry);
      this.#idle.add(entry);
      if (this.#idle.size > this.#limits.maxIdle) {
        const oldest = this.#idle.values().next().value;
        if (oldest) this.#drop(oldest);
      }
      this.#busy--;
      this.#wake();
      return;
    }
    void this.#retire(d, conn, true);
  }

  /** Wait for the destination's rate delay, then book the next transaction. */
  async pace(destination: string): Promise<void> {
    if (this.#limits.rateDelay <= 0) return;
    const d = this.#dest(destination);
    const now = this.#clock.now();
    const at = Math.max(now, d.nextSendAt);
    d.nextSendAt = at + this.#limits.rateDelay;
    if (at > now) await new Promise((resolve) => setTimeout(resolve, at - now));
  }

  /** Close every idle connection and refuse new work; busy connections are closed by their jobs. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const d of this.#destinations.values()) {
      for (const idle of [...d.idle]) this.#drop(idle);
    }
    this.#wake();
    await Promise.allSettled([...this.#quitting]);
  }

  /**
   * QUIT and close; the connection's place is free only once it is closed, so
   * the limits hold as the remote sees them too.
   */
  #retire(d: Destination, conn: ClientConnection, busy = false): Promise<void> {
    const p = conn.quit().finally(() => {
      this.#quitting.delete(p);
      if (busy) this.#busy--;
      this.#free(d);
    });
    this.#quitting.add(p);
    return p;
  }

  /** Close an idle connection. */
  #drop(idle: Idle): void {
    const d = idle.destination;
    const i = d.idle.indexOf(idle);
    if (i < 0) return;
    d.idle.splice(i, 1);
    this.#idle.delete(idle);
    clearTimeout(idle.timer);
    void this.#retire(d, idle.conn);
  }

  /** A connection of `d` is closed (or was never opened): its place is free. */
  #free(d: Destination): void {
    d.open--;
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** RFC 9422 LIMITS MAILMAX: transactions the server takes per connection. */
function mailMax(conn: ClientConnection): number | undefined {
  return limitOf(conn, 'MAILMAX');
}

/** RFC 9422 LIMITS RCPTMAX: recipients the server takes per transaction. */
export function rcptMax(conn: ClientConnection): number | undefined {
  return limitOf(conn, 'RCPTMAX');
}

function limitOf(conn: ClientConnection, name: string): number | undefined {
  for (const p of conn.capabilities.params('LIMITS')) {
    const [k, v] = p.split('=');
    if (k?.toUpperCase() === name && v !== undefined && /^\d{1,9}$/.test(v)) {
      const n = Number(v);
      return n > 0 ? n : undefined;
    }
  }
  return undefined;
}
