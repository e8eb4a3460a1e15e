/**
 * The in-memory index of jobs waiting for their next attempt: a min-heap of
 * jobs per destination and a min-heap of destinations keyed by their earliest
 * job. Taking due jobs while some destinations are at their concurrency limit
 * skips those destinations in O(log n) each instead of scanning every job.
 *
 * A job is one message's recipients at one destination; its key within the
 * destination is the message id.
 */
import { IndexedHeap } from './indexed-heap.ts';

/** How many jobs each destination is running, and the cap. */
export interface DestinationRoom {
  readonly perDestination: number;
  readonly busy: ReadonlyMap<string, number>;
}

export function roomAt(room: DestinationRoom | undefined, destination: string): number {
  if (!room) return Number.POSITIVE_INFINITY;
  return room.perDestination - (room.busy.get(destination) ?? 0);
}

export interface DueJob {
  readonly id: string;
  readonly destination: string;
  readonly at: number;
}

export class DueIndex {
  readonly #jobs = new Map<string, IndexedHeap<string>>();
  readonly #destinations = new IndexedHeap<string>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Schedule (or reschedule) message `id`'s job for `destination` at `at`. */
  set(destination: string, id: string, at: number): void {
    let heap = this.#jobs.get(destination);
    if (!heap) {
      heap = new IndexedHeap<string>();
      this.#jobs.set(destination, heap);
    }
    if (!heap.has(id)) this.#size++;
    heap.set(id, at);
    this.#destinations.set(destination, (heap.peek() as { priority: number }).priority);
  }

  delete(destination: string, id: string): void {
    const heap = this.#jobs.get(destination);
    if (!heap?.delete(id)) return;
    this.#size--;
    this.#refresh(destination, heap);
  }

  /** Remove and return up to `limit` jobs due at `now`, at most the room each destination has. */
  take(now: number, limit: number, room?: DestinationRoom): DueJob[] {
    const out: DueJob[] = [];
    const visited: string[] = [];
    while (out.length < limit) {
      const top = this.#destinations.peek();
      if (!top || top.priority > now) break;
      const destination = top.key;
      this.#destinations.delete(destination);
      visited.push(destination);
      const heap = this.#jobs.get(destination) as IndexedHeap<string>;
      let left = roomAt(room, destination);
      while (left > 0 && out.length < limit) {
        const job = heap.peek();
        if (!job || job.priority > now) break;
        heap.pop();
        this.#size--;
        out.push({ id: job.key, destination, at: job.priority });
        left--;
      }
    }
    for (const d of visited) this.#refresh(d, this.#jobs.get(d) as IndexedHeap<string>);
    return out;
  }

  /** The earliest time a job is due at a destination that has room (undefined: nothing waits). */
  next(room?: DestinationRoom): number | undefined {
    const full: Array<{ key: string; priority: number }> = [];
    let at: number | undefined;
    for (let top = this.#destinations.peek(); top; top = this.#destinations.peek()) {
      if (roomAt(room, top.key) > 0) {
        at = top.priority;
        break;
      }
      full.push(top);
      this.#destinations.delete(top.key);
    }
    for (const f of full) this.#destinations.set(f.key, f.priority);
    return at;
  }

  #refresh(destination: string, heap: IndexedHeap<string>): void {
    const top = heap.peek();
    if (top) this.#destinations.set(destination, top.priority);
    else {
      this.#destinations.delete(destination);
      this.#jobs.delete(destination);
    }
  }
}
