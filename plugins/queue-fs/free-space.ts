/**
 * Free space on the file systems the queue writes to, for refusing new mail
 * before the disk is full (Postfix's `queue_minfree`). `statfs` runs at most
 * once per `interval` ms whatever the command rate; calls in between get the
 * last figure, or no figure when the last `statfs` failed.
 */
import { statfs } from 'node:fs/promises';
import type { Clock } from '../../core/plugin.ts';

export const FREE_SPACE_INTERVAL = 1000;

export class FreeSpace {
  readonly #dirs: readonly string[];
  readonly #clock: Clock;
  readonly #interval: number;
  readonly #onError: (err: unknown) => void;
  #checkedAt = Number.NEGATIVE_INFINITY;
  /** The last figure; undefined when the last `statfs` failed. */
  #last: number | undefined;
  #pending: Promise<number | undefined> | undefined;

  /** `onError` hears of each failed `statfs` (so at most once per `interval`). */
  constructor(
    dirs: readonly string[],
    clock: Clock,
    onError: (err: unknown) => void,
    interval = FREE_SPACE_INTERVAL,
  ) {
    this.#dirs = dirs;
    this.#clock = clock;
    this.#onError = onError;
    this.#interval = interval;
  }

  /**
   * Octets an unprivileged writer may still use on the fullest of the
   * directories' file systems; undefined when it cannot be measured (tried
   * again after the interval, not on every call).
   */
  available(): number | undefined | Promise<number | undefined> {
    if (this.#clock.now() - this.#checkedAt < this.#interval) return this.#last;
    this.#pending ??= this.#measure().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  async #measure(): Promise<number | undefined> {
    try {
      const figures = await Promise.all(this.#dirs.map((d) => statfs(d)));
      this.#last = Math.min(...figures.map((s) => s.bavail * s.bsize));
    } catch (err) {
      this.#last = undefined;
      this.#onError(err);
    }
    this.#checkedAt = this.#clock.now();
    return this.#last;
  }
}
