/**
 * The resolver's answer cache: at most `capacity` entries, least recently
 * used evicted first, each kept until its expiry on the server's clock.
 */
export class TtlCache<V> {
  readonly #capacity: number;
  /** Map iteration order is insertion order: re-inserting on use keeps the oldest first. */
  readonly #entries = new Map<string, { readonly value: V; readonly expires: number }>();

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** The value and its expiry (ms, clock time), if present and not expired at `now`. */
  get(key: string, now: number): { readonly value: V; readonly expires: number } | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    if (entry.expires <= now) return undefined;
    this.#entries.set(key, entry);
    return entry;
  }

  set(key: string, value: V, expires: number): void {
    if (this.#capacity <= 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, { value, expires });
    while (this.#entries.size > this.#capacity) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.#entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}
