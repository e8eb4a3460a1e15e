/**
 * Free space on the file systems the queue writes to, for refusing new mail
 * before the disk is full (Postfix's `queue_minfree`). `statfs` runs at most
 * once per `interval` ms whatever the command rate; calls in between get the
 * last figure.
 */
import { statfs } from 'node:fs/promises';
import type { Clock } from '../../core/plugin.ts';

export const FREE_SPACE_INTERVAL = 1000;

export class FreeSpace {
  readonly #dirs: readonly string[];
  readonly #clock: Clock;
  readonly #interval: number;
  #checkedAt = Number.NEGATIVE_INFINITY;
  #last: number | undefined;
  #pending: Promise<number> | undefined;

  constructor(dirs: readonly string[], clock: Clock, interval = FREE_SPACE_INTERVAL) {
    this.#dirs = dirs;
    this.#clock = clock;
    this.#interval = interval;
  }

  /** Octets an unprivileged writer may still use on the fullest of the directories' file systems. */
  available(): number | Promise<number> {
    if (this.#last !== undefined && this.#clock.now() - this.#checkedAt < this.#interval) return this.#last;
    this.#pending ??= this.#measure().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  async #measure(): Promise<number> {
    const figures = await Promise.all(this.#dirs.map((d) => statfs(d)));
    const free = Math.min(...figures.map((s) => s.bavail * s.bsize));
    this.#last = free;
    this.#checkedAt = this.#clock.now();
    return free;
  }
}
