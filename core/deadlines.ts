/**
 * Timeouts of one fixed length for many pending calls, with one timer: the
 * tap wrappers of `plugin-host.ts` race every asynchronous hook call against
 * its plugin's timeout, and a `setTimeout` plus `clearTimeout` per call cost
 * more than the rest of the wrapper. Since every deadline here is "now + the
 * same length", deadlines come due in the order calls start: a linked list in
 * start order holds them, a settled call unlinks itself (constant time, no
 * search), and the one timer is armed for the oldest pending deadline.
 */

/** What `within` settles with when the deadline passed first. */
export const TIMED_OUT: unique symbol = Symbol('timeout');

/** The longest delay `setTimeout` honours. */
const MAX_DELAY = 2 ** 31 - 1;

interface Pending {
  readonly due: number;
  /** Called once: with TIMED_OUT by the sweep. */
  expire: ((value: typeof TIMED_OUT) => void) | undefined;
  prev: Pending | undefined;
  next: Pending | undefined;
}

export class Deadlines {
  readonly #ms: number;
  readonly #now: () => number;
  /** Oldest first (first due). */
  #head: Pending | undefined;
  #tail: Pending | undefined;
  /** Armed for the oldest deadline (or earlier); undefined when none is armed. */
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * `ms`: the one timeout length. `now`: a monotonic clock in milliseconds
   * (`performance.now` by default).
   */
  constructor(ms: number, now: () => number = () => performance.now()) {
    this.#ms = ms;
    this.#now = now;
  }

  /** Calls pending now (for tests). */
  get size(): number {
    let n = 0;
    for (let p = this.#head; p; p = p.next) n++;
    return n;
  }

  /**
   * Settle with `pending`, or with `TIMED_OUT` once the timeout passes
   * (whichever comes first): one promise and one list node a call.
   */
  within<T>(pending: PromiseLike<T>): Promise<T | typeof TIMED_OUT> {
    return new Promise((resolve, reject) => {
      const node: Pending = {
        due: this.#now() + this.#ms,
        expire: resolve,
        prev: this.#tail,
        next: undefined,
      };
      if (this.#tail) this.#tail.next = node;
      else {
        this.#head = node;
        // A pending call keeps the process alive until its timeout, as a timer of its own would.
        this.#timer?.ref();
      }
      this.#tail = node;
      if (this.#timer === undefined) this.#arm(this.#ms);
      pending.then(
        (value) => {
          if (this.#unlink(node)) resolve(value);
        },
        (err: unknown) => {
          if (this.#unlink(node)) reject(err);
        },
      );
    });
  }

  /** Take `node` out of the list; false when the sweep already expired it. */
  #unlink(node: Pending): boolean {
    if (node.expire === undefined) return false;
    node.expire = undefined;
    if (node.prev) node.prev.next = node.next;
    else this.#head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.#tail = node.prev;
    node.prev = undefined;
    node.next = undefined;
    // Nothing pending: the timer left armed must not hold the process up.
    if (this.#head === undefined) this.#timer?.unref();
    return true;
  }

  /**
   * One timer, armed for the oldest deadline. It is not cleared when calls
   * settle early (that would be a clearTimeout and a setTimeout again per
   * call): it fires, finds the list's head not yet due (or nothing), and
   * re-arms for the head's deadline (or stays off). It keeps the process
   * alive only while a call is pending (`unref` while the list is empty).
   */
  #arm(delay: number): void {
    // setTimeout takes at most 2^31 - 1 ms (longer fires at once, with a warning): a longer
    // timeout is swept once at that point and re-armed for the rest.
    this.#timer = setTimeout(() => this.#sweep(), Math.min(MAX_DELAY, Math.max(1, Math.ceil(delay))));
  }

  #sweep(): void {
    this.#timer = undefined;
    const now = this.#now();
    for (let p = this.#head; p !== undefined && p.due <= now; p = this.#head) {
      const expire = p.expire as (value: typeof TIMED_OUT) => void;
      this.#unlink(p);
      expire(TIMED_OUT);
    }
    if (this.#head) this.#arm(this.#head.due - now);
  }
}
