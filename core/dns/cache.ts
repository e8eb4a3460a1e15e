/**
 * The resolver's answer cache: at most `capacity` entries, each kept until
 * its expiry on the server's clock. When full, the least recently used entry
 * goes first, as a "second chance" (CLOCK) list keeps it: a hit only marks
 * its entry, and eviction moves marked entries to the back instead of
 * dropping them. A hit, the common case, is then one map lookup, with no
 * delete and re-insert.
 */
interface Entry<V> {
  readonly value: V;
  readonly expires: number;
  /** Read since it was inserted or last passed over by eviction. */
  used: boolean;
}

export class TtlCache<V> {
  readonly #capacity: number;
  /** Map iteration order is insertion order: the front is the next eviction candidate. */
  readonly #entries = new Map<string, Entry<V>>();

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** The value and its expiry (ms, clock time), if present and not expired at `now`. */
  get(key: string, now: number): { readonly value: V; readonly expires: number } | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires <= now) {
      this.#entries.delete(key);
      return undefined;
    }
    entry.used = true;
    return entry;
  }

  set(key: string, value: V, expires: number): void {
    if (this.#capacity <= 0) return;
    this.#entries.delete(key);
    const added: Entry<V> = { value, expires, used: false };
    this.#entries.set(key, added);
    // Each pass drops the front entry, or gives a marked one its second chance (unmarked, to the
    // back); the entry just added is never the one dropped. Bounded: every entry is passed over
    // at most once before an unmarked one other than `added` comes to the front.
    while (this.#entries.size > this.#capacity) {
      const oldest = this.#entries.entries().next();
      if (oldest.done) break;
      const [k, entry] = oldest.value;
      this.#entries.delete(k);
      if (entry.used || entry === added) {
        entry.used = false;
        this.#entries.set(k, entry);
      }
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}
