/**
 * A `dkim-verify` worker thread (started by threads.ts): verifies the
 * messages the main thread posts with `verifyMessage` (signature parsing,
 * body hash, header canonicalisation, RSA or Ed25519 check) and posts the
 * verdicts back. Key records come from the main thread, which owns the
 * server's DNS resolver and its cache: the worker posts a name and waits for
 * the answer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TtlCache } from '../../core/dns/cache.ts';
import type { DnsResult } from '../../core/dns/types.ts';
import { KeyCache, type KeyLookup, verifyMessage } from '../dkim/verify.ts';
import type { FromWorker, ToWorker, WorkerSettings } from './threads.ts';

const port = parentPort;
if (port === null) throw new Error('dkim-verify worker: not started as a worker thread');
const settings = workerData as WorkerSettings;
// Parsed public keys, by key record, for this thread's messages.
const keys = new KeyCache();
/** Key record answers (with records) by name, until their TTL runs out on the server's clock. */
const answers = new TtlCache<DnsResult<string>>(256);
/** Key lookups waiting for the main thread's answer, by lookup id. */
const waiting = new Map<number, (answer: DnsResult<string>) => void>();
let lastLookup = 0;

const post = (m: FromWorker) => port.postMessage(m);

/** Key lookups for a message verified at `now` (ms, the server's clock). */
const lookupAt =
  (now: number): KeyLookup =>
  (name) => {
    const hit = answers.get(name, now);
    if (hit !== undefined) return Promise.resolve(hit.value);
    return new Promise((resolve) => {
      const id = ++lastLookup;
      waiting.set(id, (answer) => {
        if (answer.kind === 'answer' && answer.ttl > 0) answers.set(name, answer, now + answer.ttl * 1000);
        resolve(answer);
      });
      post({ type: 'key', id, name });
    });
  };

port.on('message', (m: ToWorker) => {
  if (m.type === 'key') {
    const resolve = waiting.get(m.id);
    waiting.delete(m.id);
    resolve?.(m.answer);
    return;
  }
  const message = Buffer.from(m.message.buffer, m.message.byteOffset, m.message.byteLength);
  verifyMessage(message, {
    lookup: lookupAt(m.now),
    now: m.now,
    minKeyBits: settings.minKeyBits,
    maxSignatures: settings.maxSignatures,
    clockSkew: settings.clockSkew,
    keys,
  }).then(
    (verification) => post({ type: 'done', id: m.id, verification }),
    (err: unknown) =>
      post({ type: 'failed', id: m.id, reason: err instanceof Error ? err.message : String(err) }),
  );
});

// Loaded: from here on an exit is a crash of a working thread, not a module that cannot load.
post({ type: 'ready' });
