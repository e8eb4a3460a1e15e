/**
 * Work gathered per event-loop turn: the items added while the loop handles
 * one round of I/O run together, one after another, in that turn's check
 * phase (`setImmediate`), in the order they came.
 *
 * Why `dkim-verify` wants it: a signature check runs code and touches data
 * (OpenSSL's RSA, the canonicaliser) that the rest of the server does not.
 * Interleaved with the server's own work, one message at a time, each check
 * finds the CPU caches full of the server's code and leaves them full of its
 * own. Measured on W1 (`npm run bench:auth`, two shared cores; bench/README.md,
 * "Verifications batched per event-loop turn"): the verifier cost 67-82 us of
 * event-loop CPU per message in the server against 50-60 in a loop, and the
 * rest of the server about 40 us more per message than without it, once per
 * message however much the verifier did (verifying each message twice added
 * one warm verification, about 50 us, not 90). Checks run back to back pay
 * that once per turn instead of once per message. The price is a promise per
 * item and the wait until the turn's check phase (microseconds).
 */
export class TurnBatch<T, R> {
  readonly #run: (item: T) => R | Promise<R>;
  #waiting: {
    readonly item: T;
    readonly settle: (r: R | Promise<R>) => void;
    readonly fail: (e: unknown) => void;
  }[] = [];
  #turns = 0;

  constructor(run: (item: T) => R | Promise<R>) {
    this.#run = run;
  }

  /** Turns that have run items so far (tests). */
  get turns(): number {
    return this.#turns;
  }

  /** Run `item` with the others of this turn; resolves to what `run` gives (or rejects with what it throws). */
  add(item: T): Promise<R> {
    return new Promise<R>((settle, fail) => {
      if (this.#waiting.push({ item, settle, fail }) === 1) setImmediate(() => this.#flush());
    });
  }

  #flush(): void {
    const items = this.#waiting;
    this.#waiting = [];
    this.#turns++;
    for (const { item, settle, fail } of items) {
      try {
        settle(this.#run(item));
      } catch (err) {
        fail(err);
      }
    }
  }
}
