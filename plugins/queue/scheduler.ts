/**
 * The delivery scheduler: asks the store for due jobs, runs them within the
 * concurrency limits (overall and per destination), and sleeps on ONE timer
 * set for the earliest next attempt. It never scans the queue on a tick and
 * never keeps a timer per message: the store's due index (a min-heap, see
 * `due-index.ts`) answers "what is due" and "when is the next one".
 *
 * Time comes from the injected clock. The timer only decides when to look
 * again; whether a job is due is always judged by `clock.now()`, so tests
 * drive a fake clock and call `runDue()`.
 */
import type { Clock } from '../../core/plugin.ts';
import type { Logger } from '../../core/types.ts';
import type { DestinationRoom, Lease, QueueStore } from './types.ts';

export interface SchedulerOptions {
  readonly store: Pick<QueueStore, 'leaseDue' | 'nextDue'>;
  readonly clock: Clock;
  /** Jobs running at once, all destinations. */
  readonly concurrency: number;
  /** Jobs running at once for one destination domain. */
  readonly perDestination: number;
  /** Deliver one job and settle it. Rejections are logged. */
  readonly run: (lease: Lease) => Promise<void>;
  readonly log: Logger;
  /** Look again at least this often (ms), for stores other nodes also write to. Default: only when due. */
  readonly pollInterval?: number;
}

/** setTimeout's ceiling (about 24.8 days). */
const MAX_TIMER = 2_147_483_647;
/** Never spin faster than this when something is due but could not be taken. */
const MIN_TIMER = 5;

export class Scheduler {
  readonly #o: SchedulerOptions;
  readonly #running = new Set<Promise<void>>();
  readonly #busy = new Map<string, number>();
  readonly #room: DestinationRoom;
  #timer: NodeJS.Timeout | undefined;
  #pumping: Promise<void> | undefined;
  #again = false;
  #closed = false;
  #kicked = false;

  constructor(opts: SchedulerOptions) {
    this.#o = opts;
    this.#room = { perDestination: opts.perDestination, busy: this.#busy };
  }

  /** Jobs running now. */
  get active(): number {
    return this.#running.size;
  }

  /**
   * Look for due jobs (something was enqueued, released or retried): once, at
   * the end of this event-loop turn, however many kicks the turn brings, so
   * the replies a turn owes go out before deliveries start.
   */
  kick(): void {
    if (this.#closed || this.#kicked) return;
    this.#kicked = true;
    setImmediate(() => {
      this.#kicked = false;
      if (this.#closed) return;
      this.#pump().catch((err) => this.#o.log.error({ err }, 'queue scheduler failed'));
    });
  }

  /** Run every job due now, and whatever they make due (bounces), until nothing due is left. */
  async runDue(): Promise<void> {
    for (;;) {
      await this.#pump();
      if (this.#running.size > 0) {
        await Promise.race(this.#running);
        continue;
      }
      const next = await this.#o.store.nextDue();
      if (this.#closed || next === undefined || next > this.#o.clock.now()) return;
    }
  }

  /** Stop taking jobs; wait up to `graceMs` for running ones (they settle on their own if later). */
  async close(graceMs: number): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#pumping?.catch(() => {});
    if (this.#running.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#running]),
      new Promise((resolve) => {
        timer = setTimeout(resolve, graceMs);
      }),
    ]);
    clearTimeout(timer);
  }

  #pump(): Promise<void> {
    if (this.#pumping) {
      this.#again = true;
      return this.#pumping;
    }
    const pumping = (async () => {
      try {
        do {
          this.#again = false;
          await this.#fill();
          await this.#arm();
        } while (this.#again && !this.#closed);
      } finally {
        this.#pumping = undefined;
      }
    })();
    this.#pumping = pumping;
    return pumping;
  }

  async #fill(): Promise<void> {
    const { store, clock, concurrency } = this.#o;
    while (!this.#closed && this.#running.size < concurrency) {
      const limit = concurrency - this.#running.size;
      const leases = await store.leaseDue(clock.now(), limit, this.#room);
      for (const lease of leases) this.#start(lease);
      // Fewer than asked for: nothing else can be taken now; what waits sets the timer (`#arm`).
      if (leases.length < limit) return;
    }
  }

  #start(lease: Lease): void {
    const d = lease.destination;
    this.#busy.set(d, (this.#busy.get(d) ?? 0) + 1);
    const finish = () => {
      this.#running.delete(job);
      const n = (this.#busy.get(d) ?? 1) - 1;
      if (n <= 0) this.#busy.delete(d);
      else this.#busy.set(d, n);
      this.kick();
    };
    const job: Promise<void> = this.#o.run(lease).then(finish, (err: unknown) => {
      this.#o.log.error({ err, qid: lease.id, destination: d }, 'delivery job failed');
      finish();
    });
    this.#running.add(job);
  }

  async #arm(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // When every slot is taken, a finishing job wakes the scheduler; no timer needed.
    if (this.#closed || this.#running.size >= this.#o.concurrency) return;
    const next = await this.#o.store.nextDue(this.#room);
    let delay = next === undefined ? undefined : next - this.#o.clock.now();
    if (this.#o.pollInterval !== undefined)
      delay = Math.min(delay ?? this.#o.pollInterval, this.#o.pollInterval);
    if (delay === undefined || this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.kick();
      },
      Math.min(Math.max(delay, MIN_TIMER), MAX_TIMER),
    );
    this.#timer.unref();
  }
}
