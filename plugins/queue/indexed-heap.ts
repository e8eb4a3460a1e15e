/**
 * A binary min-heap of keys by numeric priority, with a position index so a
 * key's priority can change or the key can leave in O(log n).
 */
export class IndexedHeap<K> {
  readonly #keys: K[] = [];
  readonly #prio: number[] = [];
  readonly #pos = new Map<K, number>();

  get size(): number {
    return this.#keys.length;
  }

  has(key: K): boolean {
    return this.#pos.has(key);
  }

  priorityOf(key: K): number | undefined {
    const i = this.#pos.get(key);
    return i === undefined ? undefined : this.#prio[i];
  }

  /** The key with the lowest priority, without removing it. */
  peek(): { key: K; priority: number } | undefined {
    if (this.#keys.length === 0) return undefined;
    return { key: this.#keys[0] as K, priority: this.#prio[0] as number };
  }

  /** Insert `key`, or move it to its new priority. */
  set(key: K, priority: number): void {
    const i = this.#pos.get(key);
    if (i === undefined) {
      this.#keys.push(key);
      this.#prio.push(priority);
      this.#pos.set(key, this.#keys.length - 1);
      this.#up(this.#keys.length - 1);
      return;
    }
    const old = this.#prio[i] as number;
    this.#prio[i] = priority;
    if (priority < old) this.#up(i);
    else this.#down(i);
  }

  pop(): { key: K; priority: number } | undefined {
    const top = this.peek();
    if (top) this.delete(top.key);
    return top;
  }

  delete(key: K): boolean {
    const i = this.#pos.get(key);
    if (i === undefined) return false;
    const last = this.#keys.length - 1;
    if (i !== last) this.#swap(i, last);
    this.#keys.pop();
    this.#prio.pop();
    this.#pos.delete(key);
    if (i < this.#keys.length) {
      this.#up(i);
      this.#down(i);
    }
    return true;
  }

  #swap(a: number, b: number): void {
    const ka = this.#keys[a] as K;
    const kb = this.#keys[b] as K;
    this.#keys[a] = kb;
    this.#keys[b] = ka;
    const pa = this.#prio[a] as number;
    this.#prio[a] = this.#prio[b] as number;
    this.#prio[b] = pa;
    this.#pos.set(kb, a);
    this.#pos.set(ka, b);
  }

  #up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((this.#prio[parent] as number) <= (this.#prio[i] as number)) return;
      this.#swap(i, parent);
      i = parent;
    }
  }

  #down(i: number): void {
    const n = this.#keys.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < n && (this.#prio[l] as number) < (this.#prio[min] as number)) min = l;
      if (r < n && (this.#prio[r] as number) < (this.#prio[min] as number)) min = r;
      if (min === i) return;
      this.#swap(i, min);
      i = min;
    }
  }
}
