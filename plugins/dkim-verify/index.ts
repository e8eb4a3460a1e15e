/**
 * DKIM verification (RFC 6376) of every signature of an arriving message, in
 * the `message` hook, reading the spooled message as a stream. Each
 * signature's result is recorded on the transaction (`tx.notes.dkim`); the
 * plugin decides nothing: policy (DMARC, an action map) reads the results.
 */
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { mailauthResolver } from './resolver.ts';

export type DkimResultValue = 'pass' | 'fail' | 'neutral' | 'none' | 'temperror' | 'permerror';

/** One signature's result (or the single `none` of a message without signatures). */
export interface DkimSignatureResult {
  readonly result: DkimResultValue;
  /** The signing domain (`d=`); absent for `none`. */
  readonly domain?: string;
  /** The selector (`s=`). */
  readonly selector?: string;
  /** The algorithm (`a=`), e.g. `rsa-sha256`, `ed25519-sha256`. */
  readonly algorithm?: string;
  /** Why it did not pass (e.g. `no key`, `body hash did not verify`). */
  readonly reason?: string;
  /** The key record has `t=y`: the domain is testing DKIM. */
  readonly testing?: boolean;
}

declare module '../../core/types.ts' {
  interface TransactionNotes {
    /** Set by `dkim-verify`: one entry per DKIM-Signature field, in message order. */
    dkim?: readonly DkimSignatureResult[];
  }
}

export const schema = Type.Object(
  {
    minKeyBits: Type.Integer({
      minimum: 512,
      default: 1024,
      description: 'RSA keys shorter than this fail as `permerror` (RFC 8301 section 3.2: at least 1024).',
    }),
  },
  { additionalProperties: false },
);

/** Key record problems: the signature cannot be verified, and will not be later (RFC 6376 section 6.1.2). */
const KEY_ERRORS = new Set([
  'no key',
  'unknown key version',
  'unknown key type',
  'invalid public key',
  'inappropriate hash algorithm',
  'key not for email',
]);

/** mailauth's status to the result values of RFC 8601 section 2.7.1. */
export function toResult(status: { result: string; comment?: string }): {
  result: DkimResultValue;
  reason?: string;
} {
  const reason = status.comment;
  const withReason = <R extends DkimResultValue>(result: R) => (reason ? { result, reason } : { result });
  switch (status.result) {
    case 'pass':
    case 'fail':
    case 'temperror':
    case 'permerror':
      return withReason(status.result);
    case 'temperr':
      return withReason('temperror');
    case 'policy':
      return { result: 'permerror', reason: reason ?? 'weak key' };
    case 'neutral':
      // A body hash mismatch fails verification (RFC 6376 6.1.3, RFC 8601 2.7.1); mailauth's lenient mode says neutral.
      if (reason === 'body hash did not verify') return { result: 'fail', reason };
      return reason !== undefined && KEY_ERRORS.has(reason)
        ? { result: 'permerror', reason }
        : withReason('neutral');
    default:
      return withReason('neutral');
  }
}

export default definePlugin({
  name: 'dkim-verify',
  description:
    'Verifies every DKIM signature of arriving mail (RFC 6376), streaming the spool; records results for policy.',
  schema,
  register(api, config) {
    const resolver = mailauthResolver(api.server.dns);
    api.hooks.message.tap(
      async (tx, message) => {
        const sender = tx.from.address?.address;
        const out = await dkimVerify(message.stream(), {
          resolver,
          minBitLength: config.minKeyBits,
          // RFC 8301 section 3.1: rsa-sha1 signatures are not valid (a permerror, "weak algorithm").
          rejectRsaSha1: true,
          ...(sender === undefined ? {} : { sender }),
        });
        const results: DkimSignatureResult[] = out.results
          .filter((r) => r.signingDomain !== undefined || r.status.result !== 'none')
          .map((r) => ({
            ...toResult(r.status),
            ...(r.signingDomain === undefined ? {} : { domain: r.signingDomain }),
            ...(r.selector === undefined ? {} : { selector: r.selector }),
            ...(r.algo === undefined ? {} : { algorithm: r.algo }),
            ...(r.status.testing ? { testing: true } : {}),
          }));
        tx.notes.dkim = results.length > 0 ? results : [{ result: 'none' }];
        tx.log.debug({ dkim: tx.notes.dkim }, 'DKIM verified');
        return undefined;
      },
      { stage: Stage.EARLY },
    );
  },
});
