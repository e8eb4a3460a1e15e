/**
 * DKIM verification (RFC 6376) of every signature of an arriving message, in
 * the `message` hook, reading the spooled message as a stream. Each
 * signature's result is recorded on the transaction (check `dkim`, see
 * docs/policy.md); the `actions` map decides on the best of them (by default
 * nothing is refused: DMARC and other policy read the results).
 */
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import { mailauthResolver } from '../policy/mailauth-resolver.ts';
import {
  actionsSchema,
  type CheckResult,
  type DefaultReplies,
  decide,
  type ResultValue,
  recordResult,
  validateActions,
} from '../policy/policy.ts';

/** What `dkim-verify` records per signature (check `dkim`; a message without signatures: one `none`). */
export interface DkimResult extends CheckResult {
  /** The signing domain (`d=`); absent for `none`. */
  readonly domain?: string;
  /** The selector (`s=`). */
  readonly selector?: string;
  /** The algorithm (`a=`), e.g. `rsa-sha256`, `ed25519-sha256`. */
  readonly algorithm?: string;
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
function toResult(status: { result: string; comment?: string }): {
  result: ResultValue;
  reason?: string;
} {
  const reason = status.comment;
  const withReason = <R extends ResultValue>(result: R) => (reason ? { result, reason } : { result });
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
  description:
    'Verifies every DKIM signature of arriving mail (RFC 6376), streaming the spool; records results for policy.',
  schema,
  register(api, config) {
    validateActions('dkim-verify', config.actions);
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
        const results: DkimResult[] = out.results
          .filter((r) => r.signingDomain !== undefined || r.status.result !== 'none')
          .map((r) => {
            const properties: Record<string, string> = {};
            if (r.signingDomain !== undefined) properties['header.d'] = r.signingDomain;
            if (r.selector !== undefined) properties['header.s'] = r.selector;
            if (r.algo !== undefined) properties['header.a'] = r.algo;
            return {
              ...toResult(r.status),
              ...(r.signingDomain === undefined ? {} : { domain: r.signingDomain }),
              ...(r.selector === undefined ? {} : { selector: r.selector }),
              ...(r.algo === undefined ? {} : { algorithm: r.algo }),
              ...(r.status.testing ? { testing: true } : {}),
              properties,
            };
          });
        if (results.length === 0) results.push({ result: 'none' });
        for (const r of results) recordResult(tx, 'dkim', r);
        tx.log.debug({ dkim: results }, 'DKIM verified');
        return decide(tx, 'dkim', overall(results), config.actions, REPLIES);
      },
      { stage: Stage.EARLY },
    );
  },
});
