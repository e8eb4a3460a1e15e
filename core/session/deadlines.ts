/**
 * How long the client may take (RFC 5321 4.5.3.2), as deadlines a trickle
 * cannot extend:
 *
 * - waiting for a command, the whole line must arrive within the command
 *   timeout, counted from when our reply went out (or the wait began):
 *   octets that arrive do not restart it;
 * - receiving message data (DATA, BDAT chunks), the data timeout is a budget
 *   that each received octet adds `1 / minDataRate` seconds to, never more
 *   than the data timeout from now (Postfix's `smtpd_timeout` with
 *   `smtpd_min_data_rate`): a client slower than the minimum rate runs out.
 *
 * Deadlines are kept against the server's coarse clock (see `idle-sweep.ts`:
 * no timer per connection). The server's sweep asks `expired`; the session
 * decides what a timeout means in its state.
 */
import type { IdleSweep } from '../idle-sweep.ts';

export class Deadlines {
  readonly #idle: IdleSweep;
  /** Milliseconds of time each message octet buys (`Infinity`: any octet restarts the data timeout). */
  readonly #dataMsPerOctet: number;
  /** The wait in force (command or data timeout). */
  #timeoutMs = -1;
  /** What an octet buys in the current wait: 0 while waiting for a command line. */
  #msPerOctet = 0;
  #deadline = Number.POSITIVE_INFINITY;

  /** @param minDataRate octets per second message data must average; 0 turns the rate off. */
  constructor(idle: IdleSweep, minDataRate: number) {
    this.#idle = idle;
    this.#dataMsPerOctet = minDataRate > 0 ? 1000 / minDataRate : Number.POSITIVE_INFINITY;
  }

  /** Wait at most `ms` from now for a whole command line (and again after each `restart`). */
  armCommand(ms: number): void {
    this.#timeoutMs = ms;
    this.#msPerOctet = 0;
    this.#deadline = this.#idle.deadline(ms);
  }

  /** Wait for message data: `ms` from now, extended by what arrives at the minimum rate. */
  armData(ms: number): void {
    this.#timeoutMs = ms;
    this.#msPerOctet = this.#dataMsPerOctet;
    this.#deadline = this.#idle.deadline(ms);
  }

  /** Our reply went out: the client's time starts again. */
  restart(): void {
    this.#deadline = this.#idle.deadline(this.#timeoutMs);
  }

  /** `octets` arrived from the client: in message data, they buy time. */
  received(octets: number): void {
    if (this.#msPerOctet === 0) return;
    const limit = this.#idle.deadline(this.#timeoutMs);
    // With the rate off (`Infinity` per octet) any octet restarts the wait.
    this.#deadline =
      this.#msPerOctet === Number.POSITIVE_INFINITY
        ? limit
        : Math.min(limit, this.#deadline + octets * this.#msPerOctet);
  }

  /** Whether the client has used up its time at `now` (the sweep's clock). */
  expired(now: number): boolean {
    return now >= this.#deadline;
  }
}
