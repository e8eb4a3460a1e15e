/**
 * Message submission (RFC 6409) on listeners with role `submission`: every
 * domain in the envelope must be fully qualified (section 4.2), refused with
 * 554 otherwise. AUTH before MAIL (section 4.3) is the `auth` plugin's
 * `requireAuth`, on by default for these listeners.
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Address, Session } from '../../core/types.ts';

export const schema = Type.Object(
  {
    requireFqdn: Type.Boolean({
      default: true,
      description:
        'Refuse MAIL and RCPT whose domain is not fully qualified (no dot, e.g. `alice@laptop`) with 554 (RFC 6409 section 4.2). Address literals pass.',
    }),
  },
  { additionalProperties: false },
);

const senderNotFqdn = reply(554, '5.1.8', 'Sender domain must be fully qualified');
const recipientNotFqdn = reply(554, '5.1.2', 'Recipient domain must be fully qualified');

/** A domain name with at least two labels; address literals count as qualified. */
export function isFullyQualified(address: Address): boolean {
  if (address.domainKind !== 'name') return true;
  const domain = address.asciiDomain;
  const dot = domain.indexOf('.');
  return dot > 0 && dot < domain.length - 1 && !domain.endsWith('.');
}

const isSubmission = (s: Session) => s.listener.role === 'submission';

export default definePlugin({
  name: 'submission',
  description: 'RFC 6409 message submission: fully-qualified envelope domains on submission listeners.',
  schema,
  register(api, config) {
    if (!config.requireFqdn) return;
    api.hooks.mail.tap(
      (tx, from) => {
        if (!isSubmission(tx.session) || from.address === null) return undefined;
        return isFullyQualified(from.address) ? undefined : senderNotFqdn;
      },
      { stage: Stage.EARLY },
    );
    api.hooks.rcpt.tap(
      (tx, to) => {
        // `<Postmaster>` (domain '') is always acceptable (RFC 5321 section 4.5.1).
        if (!isSubmission(tx.session) || to.address.domain === '') return undefined;
        return isFullyQualified(to.address) ? undefined : recipientNotFqdn;
      },
      { stage: Stage.EARLY },
    );
  },
});
