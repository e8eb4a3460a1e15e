/**
 * DKIM verification (RFC 6376) of every signature of an arriving message, in
 * the `message` hook, reading the spooled message as a stream once
 * (`plugins/dkim/verify.ts`). Each signature's result is recorded on the
 * transaction (check `dkim`, see docs/policy.md); the `actions` map decides
 * on the best of them (by default nothing is refused: DMARC and other policy
 * read the results).
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Message, Transaction } from '../../core/types.ts';
import {
  KeyCache,
  type SignatureVerdict,
  type Verification,
  type VerifyOptions,
  verifyHeader,
  verifyMessage,
} from '../dkim/verify.ts';
import { type MessageHeader, messageHeaderNow } from '../policy/message-header.ts';
import {
  actionsSchema,
  type CheckResult,
  type DefaultReplies,
  decide,
  type ResultValue,
  recordResult,
  validateActions,
} from '../policy/policy.ts';
import { VerifierPool } from './threads.ts';
import { TurnBatch } from './turn-batch.ts';

/** What `dkim-verify` records per signature (check `dkim`; a message without signatures: one `none`). */
export interface DkimResult extends CheckResult {
  /** The signing domain (`d=`); absent for `none`. */
  readonly domain?: string;
  /** The selector (`s=`). */
  readonly selector?: string;
  /** The algorithm (`a=`), e.g. `rsa-sha256`, `ed25519-sha256`. */
  readonly algorithm?: string;
  /** `l=`: the signature covers only this many octets of the body (content after them is unsigned). */
  readonly bodyLength?: number;
  /** The key record has `t=y`: the domain is testing DKIM. */
  readonly testing?: boolean;
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    dkim: DkimResult;
  }
}

export const schema = Type.Object(
  {
    actions: actionsSchema('DKIM', {}),
    minKeyBits: Type.Integer({
      minimum: 512,
      default: 1024,
      description: 'RSA keys shorter than this fail as `permerror` (RFC 8301 section 3.2: at least 1024).',
    }),
    maxSignatures: Type.Integer({
      minimum: 1,
      default: 10,
      description:
        'Signatures checked per message, from the top; those past it are not checked (nor recorded), and a log line says how many. Each costs a key lookup and a signature check.',
    }),
    clockSkew: Type.Integer({
      minimum: 0,
      default: 300,
      description: 'Seconds a signature’s `t=` may lie in the future before the signature is `neutral`.',
    }),
    threadPool: Type.Boolean({
      default: false,
      description:
        'Check each signature’s RSA or Ed25519 signature on libuv’s thread pool (shared with file system work, `UV_THREADPOOL_SIZE`) instead of the event loop. Pays off only with CPU cores to spare; see docs/policy.md, Performance. Not used by `workers` threads.',
    }),
    workers: Type.Integer({
      minimum: 0,
      maximum: 64,
      default: 0,
      description:
        'Worker threads that verify small messages (those checks read in one buffer): signature parsing, canonicalisation, body hash and the RSA or Ed25519 check leave the event loop, which keeps the DNS lookups (the server’s resolver and cache). 0: everything on the event loop (the default: on two busy cores the threads cut the event loop’s CPU per message but raised no throughput). A message spilled to disk, or one past 64 in flight on every thread, is verified on the event loop. A thread that crashes is replaced; its messages get `temperror`. See docs/policy.md, Performance.',
    }),
  },
  { additionalProperties: false },
);

/** RFC 7372: 5.7.20 "No passing DKIM signature found". */
const REPLIES: DefaultReplies = {
  reject: reply(550, '5.7.20', 'No passing DKIM signature found'),
  tempfail: reply(451, '4.7.20', 'DKIM key lookup failed, try again later'),
};

const PRECEDENCE: readonly ResultValue[] = ['pass', 'temperror', 'fail', 'permerror', 'neutral', 'none'];

/** The message's DKIM result for the action map: the best any signature got (one pass is enough). */
export function overall(results: readonly CheckResult[]): ResultValue {
  for (const value of PRECEDENCE) if (results.some((r) => r.result === value)) return value;
  return 'none';
}

export default definePlugin({
  name: 'dkim-verify',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description:
    'Verifies every DKIM signature of arriving mail (RFC 6376), streaming the spool; records results for policy.',
  schema,
  register(api, config) {
    validateActions('dkim-verify', config.actions);
    // Parsed public keys, by key record: a key is parsed once, not per message.
    const keys = new KeyCache();
    const lookup = (name: string) => api.server.dns.lookup(name, 'TXT');
    const dns = api.server.dns;
    // A key record in the resolver's cache is used at once: a message whose keys are cached is verified
    // without waiting for DNS.
    const cachedLookup = dns.cached === undefined ? undefined : (name: string) => dns.cached?.(name, 'TXT');
    const settings = {
      minKeyBits: config.minKeyBits,
      maxSignatures: config.maxSignatures,
      clockSkew: config.clockSkew,
    };
    const pool =
      config.workers > 0
        ? new VerifierPool(api.server, config.workers, settings, lookup, api.log)
        : undefined;
    // At shutdown, and when a config reload replaced or dropped this instance (after its last session).
    if (pool) api.onClose(() => pool.close());
    const options = (now: number): VerifyOptions => ({
      lookup,
      now,
      ...settings,
      keys,
      threadPool: config.threadPool,
      ...(cachedLookup === undefined ? {} : { cachedLookup }),
    });
    const conclude = (tx: Transaction, { signatures, skipped }: Verification) => {
      if (skipped > 0)
        tx.log.info(
          { checked: config.maxSignatures, skipped },
          'DKIM: signatures past maxSignatures not checked',
        );
      const results: DkimResult[] = signatures.map(toResult);
      if (results.length === 0) results.push({ result: 'none' });
      for (const r of results) recordResult(tx, 'dkim', r);
      // Guarded: the transaction's child logger is made on first use, and most transactions need none.
      if (api.log.isLevelEnabled('debug')) tx.log.debug({ dkim: results }, 'DKIM verified');
      return decide(tx, 'dkim', overall(results), config.actions, REPLIES);
    };
    // Messages in memory whose DATA ended in the same event-loop turn are verified back to back
    // (turn-batch.ts says why).
    const batch = new TurnBatch((job: { tx: Transaction; header: MessageHeader; now: number }) => {
      const verified = verifyHeader(job.header, options(job.now));
      return verified instanceof Promise
        ? verified.then((v) => conclude(job.tx, v))
        : conclude(job.tx, verified);
    });
    const verify = (tx: Transaction, message: Message, header: MessageHeader | undefined) => {
      const now = api.server.clock.now();
      const threaded = header && pool?.verify(header.buffer, now);
      if (threaded) return threaded.then((v) => conclude(tx, v));
      if (header) return batch.add({ tx, header, now });
      return verifyMessage(message.stream(), options(now)).then((v) => conclude(tx, v));
    };
    api.hooks.message.tap(
      (tx, message) => {
        // A small message in one buffer, its header section parsed once for every check that reads it.
        // Usually parsed at once, and verified in this turn's batch without waiting for DNS: the message
        // is in memory and the key records are in the resolver's cache.
        const header = messageHeaderNow(tx, message);
        return header instanceof Promise
          ? header.then((h) => verify(tx, message, h))
          : verify(tx, message, header);
      },
      { stage: Stage.EARLY },
    );
  },
});

/** A signature's verdict as recorded, with its RFC 8601 properties (`header.d`, `header.i`, ...). */
function toResult(v: SignatureVerdict): DkimResult {
  const properties: Record<string, string> = {};
  // Built by assignment, not conditional spreads: this runs for every signature of every message.
  const out: { -readonly [K in keyof DkimResult]: DkimResult[K] } = { result: v.result };
  if (v.reason !== undefined) out.reason = v.reason;
  if (v.domain !== undefined) {
    properties['header.d'] = v.domain;
    out.domain = v.domain;
  }
  if (v.identity !== undefined) properties['header.i'] = v.identity;
  if (v.selector !== undefined) {
    properties['header.s'] = v.selector;
    out.selector = v.selector;
  }
  if (v.algorithm !== undefined) {
    properties['header.a'] = v.algorithm;
    out.algorithm = v.algorithm;
  }
  if (v.b !== undefined) properties['header.b'] = v.b;
  if (v.bodyLength !== undefined) out.bodyLength = v.bodyLength;
  if (v.testing) out.testing = true;
  out.properties = properties;
  return out;
}
