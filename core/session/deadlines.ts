/**
 * How long the client may take (RFC 5321 4.5.3.2): the time by which the
 * session must hear from its client, against the server's coarse clock (see
 * `idle-sweep.ts`: no timer per connection). The server's sweep asks
 * `expired`; the session decides what a timeout means in its state.
 */
import type { IdleSweep } from '../idle-sweep.ts';

export class Deadlines {
  readonly #idle: IdleSweep;
  /** The wait in force (command or data timeout), restarted by `restart`. */
  #timeoutMs = -1;
  #deadline = Number.POSITIVE_INFINITY;

  constructor(idle: IdleSweep) {
    this.#idle = idle;
  }

  /** Wait at most `ms` from now for the client (and again after each `restart`). */
  arm(ms: number): void {
    this.#timeoutMs = ms;
    this.#deadline = this.#idle.deadline(ms);
  }

  /** The client was heard from, or our reply went out: its time starts again. */
  restart(): void {
    this.#deadline = this.#idle.deadline(this.#timeoutMs);
  }

  /** Whether the client has used up its time at `now` (the sweep's clock). */
  expired(now: number): boolean {
    return now >= this.#deadline;
  }
}
