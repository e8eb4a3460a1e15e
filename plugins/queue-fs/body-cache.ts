/**
 * Recently queued small messages kept in memory, so their first delivery
 * attempt reads no file. Bounded by total octets. When full it admits nothing
 * new rather than evicting: the queue delivers oldest first, so the bodies
 * already held are the ones needed next. A body leaves when its message is
 * removed, deferred or held (its next attempt is minutes away at best).
 */

/**
 * What holding `body` keeps alive: its whole backing store. A small Buffer is
 * often a slice of Node's shared 8 KiB pool, and holding the slice holds the
 * slab; counting the slab keeps the bound true (several bodies sharing a slab
 * are counted more than once, which errs on the safe side).
 */
function costOf(body: Buffer): number {
  return Math.max(body.length, body.buffer.byteLength);
}

export class BodyCache {
  readonly #limit: number;
  readonly #bodies = new Map<string, { readonly body: Buffer; readonly cost: number }>();
  #bytes = 0;

  /** `limit`: octets held at most (0 turns the cache off). */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Octets held, counted as `costOf` does. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Keep `body` for `id` if it fits. The caller hands the buffer over: it must not change it. */
  add(id: string, body: Buffer): void {
    const cost = costOf(body);
    if (this.#bytes + cost > this.#limit || this.#bodies.has(id)) return;
    this.#bodies.set(id, { body, cost });
    this.#bytes += cost;
  }

  get(id: string): Buffer | undefined {
    return this.#bodies.get(id)?.body;
  }

  delete(id: string): void {
    const held = this.#bodies.get(id);
    if (held === undefined) return;
    this.#bodies.delete(id);
    this.#bytes -= held.cost;
  }
}
