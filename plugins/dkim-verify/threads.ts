/**
 * `dkim-verify`'s worker threads (`workers: N`): a pool of N threads that run
 * `verifyMessage` (worker.ts), so signature parsing, canonicalisation, body
 * hashing and the RSA or Ed25519 check leave the event loop. The event loop
 * copies the message into a transferable buffer, posts it with a request id,
 * answers the thread's key lookups from the server's DNS resolver (its cache,
 * its configured servers), and takes the verdicts back: two messages across
 * threads per message verified, two more when the thread does not hold the
 * key record's answer (a thread keeps one for its TTL).
 *
 * Each message goes to the thread with the fewest in flight; past
 * `MAX_IN_FLIGHT` on every thread (or with no thread able to start) `verify`
 * answers undefined and the caller verifies on the event loop. A thread that
 * exits (a crash, an out-of-memory abort, `terminate`) settles its messages
 * with one `temperror` each ("verifier thread exited"), never leaving a
 * caller waiting, and is replaced when the next message comes. Threads are
 * `unref`'d (they never keep the process alive) and end with `close`.
 */
import { Worker } from 'node:worker_threads';
import type { DnsResult } from '../../core/dns/types.ts';
import type { ServerFacts } from '../../core/plugin.ts';
import type { Logger } from '../../core/types.ts';
import type { KeyLookup, Verification } from '../dkim/verify.ts';

/** The verifier settings a thread starts with (`workerData`). */
export interface WorkerSettings {
  readonly minKeyBits: number;
  readonly maxSignatures: number;
  readonly clockSkew: number;
}

/** Main thread to worker. */
export type ToWorker =
  /** Verify `message` (a whole small message, CRLF line endings) at time `now` (ms since the epoch). */
  | { readonly type: 'verify'; readonly id: number; readonly message: Uint8Array; readonly now: number }
  /** The answer to the worker's key lookup `id`. */
  | { readonly type: 'key'; readonly id: number; readonly answer: DnsResult<string> };

/** Worker to main thread. */
export type FromWorker =
  /** The worker's module has loaded: it takes messages. */
  | { readonly type: 'ready' }
  /** Look up the TXT records of `name` (`<s>._domainkey.<d>`). */
  | { readonly type: 'key'; readonly id: number; readonly name: string }
  | { readonly type: 'done'; readonly id: number; readonly verification: Verification }
  /** `verifyMessage` threw (a bug): the message gets a `temperror`. */
  | { readonly type: 'failed'; readonly id: number; readonly reason: string };

/** Messages one thread may have in flight; past it on every thread, the caller verifies on the event loop. */
export const MAX_IN_FLIGHT = 64;

/**
 * The worker's module: worker.ts next to this file in a clone (Node strips
 * its types, as it does the server's), worker.js in the built package.
 */
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);

/** What a message in flight on a thread that exits gets. */
function lost(reason: string): Verification {
  return { signatures: [{ result: 'temperror', reason }], skipped: 0 };
}

/** Each server's open pools (by `api.server`): the seam tests use to stop a thread. */
const pools = new WeakMap<ServerFacts, Set<VerifierPool>>();

/** The open verifier pools of `server`'s dkim-verify instances (tests). */
export function verifierPools(server: ServerFacts): readonly VerifierPool[] {
  return [...(pools.get(server) ?? [])];
}

interface Thread {
  readonly worker: Worker;
  /** Messages in flight, by request id: how to settle each. */
  readonly pending: Map<number, (v: Verification) => void>;
  /** The thread's module loaded (its 'ready' message; 'online' comes before the module is even read). */
  ready: boolean;
  /** The thread has ended ('exit'). */
  exited: boolean;
  readonly ended: Promise<void>;
}

export class VerifierPool {
  readonly #server: ServerFacts;
  readonly #size: number;
  readonly #settings: WorkerSettings;
  readonly #lookup: KeyLookup;
  readonly #log: Logger;
  readonly #module: URL;
  /** One slot per thread; undefined once its thread exited, until the next message starts another. */
  readonly #threads: (Thread | undefined)[];
  #lastId = 0;
  #answered = 0;
  #keyLookups = 0;
  /** Where the least-busy search starts: ties go round-robin. */
  #next = 0;
  #closed = false;
  /** A thread exited before its module loaded: threads cannot start here (every message verifies on the event loop). */
  #broken = false;

  /** `module`: the worker's module (tests give one that cannot load). */
  constructor(
    server: ServerFacts,
    size: number,
    settings: WorkerSettings,
    lookup: KeyLookup,
    log: Logger,
    module: URL = WORKER_URL,
  ) {
    this.#server = server;
    const open = pools.get(server) ?? new Set();
    pools.set(server, open.add(this));
    this.#size = size;
    this.#settings = settings;
    this.#lookup = lookup;
    this.#log = log;
    this.#module = module;
    this.#threads = Array.from({ length: size }, () => this.#start());
  }

  /** Threads started and not yet ended. */
  get running(): number {
    return this.#running().length;
  }

  /** Messages the threads verified (answered with their verdicts) since the pool started. */
  get answered(): number {
    return this.#answered;
  }

  /** Key lookups the threads asked the event loop for (a thread keeps answers for their TTL). */
  get keyLookups(): number {
    return this.#keyLookups;
  }

  /** Messages in flight on all threads. */
  get inFlight(): number {
    let n = 0;
    for (const t of this.#threads) n += t?.pending.size ?? 0;
    return n;
  }

  /**
   * Verify `message` (a whole message in one buffer, left as it is: the
   * thread gets a copy) on the least busy thread; undefined when every
   * thread is at `MAX_IN_FLIGHT`, the pool is closed, or threads cannot start.
   */
  verify(message: Uint8Array, now: number): Promise<Verification> | undefined {
    if (this.#closed || this.#broken) return undefined;
    let best: Thread | undefined;
    for (let i = 0; i < this.#size; i++) {
      const slot = (this.#next + i) % this.#size;
      let t = this.#threads[slot];
      if (t === undefined) {
        t = this.#start();
        this.#threads[slot] = t;
      }
      if (best === undefined || t.pending.size < best.pending.size) best = t;
      if (t.pending.size === 0) break;
    }
    this.#next = (this.#next + 1) % this.#size;
    if (best === undefined || best.pending.size >= MAX_IN_FLIGHT) return undefined;
    const thread = best;
    const id = ++this.#lastId;
    // A copy in an ArrayBuffer of its own, moved to the thread: cloning the Buffer instead
    // serialises the whole slab it may sit in (about 30 us more per message: bench/dkim-handover.ts).
    const copy = new Uint8Array(message);
    return new Promise((resolve) => {
      thread.pending.set(id, resolve);
      const request: ToWorker = { type: 'verify', id, message: copy, now };
      thread.worker.postMessage(request, [copy.buffer]);
    });
  }

  /** End every thread (messages still in flight get a `temperror`); resolves once they have exited. */
  async close(): Promise<void> {
    this.#closed = true;
    pools.get(this.#server)?.delete(this);
    await Promise.all(this.#running().map((t) => t.worker.terminate().then(() => t.ended)));
  }

  /** The threads started and not yet ended: a slot is emptied when its thread exits. */
  #running(): Thread[] {
    return this.#threads.filter((t): t is Thread => t !== undefined);
  }

  /**
   * Stop thread `index` as a crash would (tests: its messages in flight get a
   * `temperror`, the next message starts another). Resolves once it exited.
   */
  async terminateThread(index: number): Promise<void> {
    const t = this.#threads[index];
    if (t === undefined) return;
    await t.worker.terminate();
    await t.ended;
  }

  #start(): Thread {
    const worker = new Worker(this.#module, {
      workerData: this.#settings,
      name: 'dkim-verify',
      // Its stdout and stderr go to the main thread's own (a crash's message included).
      stdout: false,
      stderr: false,
    });
    let ended = () => {};
    const thread: Thread = {
      worker,
      pending: new Map(),
      ready: false,
      exited: false,
      ended: new Promise<void>((resolve) => {
        ended = resolve;
      }),
    };
    worker.on('message', (m: FromWorker) => this.#receive(thread, m));
    const threadId = worker.threadId;
    worker.on('error', (err) => {
      this.#log.error({ err, threadId }, 'dkim-verify: verifier thread failed');
    });
    worker.on('exit', (code) => {
      thread.exited = true;
      const slot = this.#threads.indexOf(thread);
      if (slot >= 0) this.#threads[slot] = undefined;
      const lostCount = thread.pending.size;
      for (const settle of thread.pending.values()) settle(lost('verifier thread exited'));
      thread.pending.clear();
      if (!this.#closed) {
        if (!thread.ready && !this.#broken) {
          this.#broken = true;
          this.#log.error(
            { threadId, code, lost: lostCount },
            'dkim-verify: a verifier thread could not start; verifying on the event loop',
          );
        } else {
          this.#log.error(
            { threadId, code, lost: lostCount },
            'dkim-verify: verifier thread exited; its messages get temperror, the next message starts another',
          );
        }
      }
      ended();
    });
    // The threads never keep the process alive: the server's sockets and timers do. After the
    // listeners: adding a 'message' listener refs the worker again.
    worker.unref();
    return thread;
  }

  #receive(thread: Thread, m: FromWorker): void {
    switch (m.type) {
      case 'ready':
        thread.ready = true;
        return;
      case 'key': {
        this.#keyLookups++;
        const answer = (a: DnsResult<string>) => {
          if (thread.exited) return;
          const reply: ToWorker = { type: 'key', id: m.id, answer: a };
          thread.worker.postMessage(reply);
        };
        // The resolver answers with values; a rejection would be a bug there: a temporary failure here.
        this.#lookup(m.name).then(answer, () => answer({ kind: 'error', reason: 'network' }));
        return;
      }
      case 'done':
      case 'failed': {
        const settle = thread.pending.get(m.id);
        thread.pending.delete(m.id);
        if (m.type === 'failed') {
          this.#log.error(
            { threadId: thread.worker.threadId, reason: m.reason },
            'dkim-verify: verifier failed',
          );
          settle?.(lost('verifier failed'));
        } else if (settle) {
          this.#answered++;
          settle(m.verification);
        }
        return;
      }
    }
  }
}
