/**
 * Inactivity timeouts without a timer per connection. Each session keeps the
 * time by which it must hear from its client, against the coarse clock kept
 * here, and one interval timer per server looks its sessions over. A
 * per-socket timer (`socket.setTimeout`) would be refreshed on every read
 * and every write: measured on the W1 benchmark, about 8 % of the server's
 * CPU per message, and a timer object per idle connection.
 *
 * A deadline is checked at the first sweep after it passed, so a timeout
 * fires up to one interval late; `deadline` adds the interval the clock may
 * lag by, so it does not fire early either (unless the event loop was held
 * up for longer than an interval). The timer runs only while there are
 * sessions.
 */
export class IdleSweep {
  /** Sweep period in ms: a quarter of the shortest timeout, 25 ms to 1 s. */
  readonly interval: number;
  /** Monotonic ms, updated at each sweep: may lag real time by up to one interval. */
  now = performance.now();
  readonly #sweep: (now: number) => void;
  #timer: NodeJS.Timeout | undefined;

  constructor(shortestTimeout: number, sweep: (now: number) => void) {
    this.interval = Math.min(1000, Math.max(25, Math.floor(shortestTimeout / 4)));
    this.#sweep = sweep;
  }

  /** The deadline for a wait of `timeoutMs` starting now (never earlier than the real one). */
  deadline(timeoutMs: number): number {
    return this.now + this.interval + timeoutMs;
  }

  /** Sweep every `interval` ms from now on (no-op when already running). */
  start(): void {
    if (this.#timer) return;
    this.now = performance.now();
    this.#timer = setInterval(() => {
      this.now = performance.now();
      this.#sweep(this.now);
    }, this.interval);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
