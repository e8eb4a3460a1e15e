/**
 * Accept recipients at the local domains: any mailbox, or only the listed
 * ones (550 5.1.1 for the rest). Postmaster is always accepted (RFC 5321 4.5.1).
 * A local part that routes elsewhere (`user%remote@local`, `remote!user@local`,
 * `"user@remote"@local`) is refused with 550 5.7.1 unless listed as is.
 */
import Type from 'typebox';
import { domainKey, isRoutingLocalPart, unquotedLocalPart } from '../../core/address.ts';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { Replies, reply } from '../../core/reply.ts';

export const schema = Type.Object(
  {
    domains: Type.Array(Type.String({ minLength: 1 }), {
      default: ['localhost'],
      description:
        'Domains this server is the final destination for (case-insensitive; internationalised names as U-labels or A-labels).',
    }),
    mailboxes: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        description:
          'Accepted local parts (`alice`) or addresses (`alice@example.com`), case-insensitive. Absent: every local part is accepted.',
      }),
    ),
  },
  { additionalProperties: false },
);

/**
 * A local part holding another address: the `%` hack, a UUCP bang path, or a
 * quoted `@`. Some mail stores and MTAs downstream still route on these, which
 * would make us an open relay through a local domain.
 */
const routedLocalPart = reply(550, '5.7.1', 'Relaying through the local part is not allowed');

function configuredDomain(domain: string): string {
  const key = domainKey(domain);
  if (key === undefined) throw new Error(`"${domain}" is not a domain name or an address literal`);
  return key;
}

/** `alice` stays a local part; `alice@Bücher.example` becomes `alice@xn--bcher-kva.example`. */
function configuredMailbox(mailbox: string): string {
  const at = mailbox.lastIndexOf('@');
  if (at < 0) return mailbox.toLowerCase();
  return `${mailbox.slice(0, at).toLowerCase()}@${configuredDomain(mailbox.slice(at + 1))}`;
}

export default definePlugin({
  name: 'rcpt-local',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'Accepts recipients at local domains, optionally only listed mailboxes.',
  schema,
  register(api, config) {
    const domains = new Set(config.domains.map(configuredDomain));
    const mailboxes = config.mailboxes ? new Set(config.mailboxes.map(configuredMailbox)) : undefined;
    api.hooks.rcpt.tap(
      (_tx, to) => {
        const { address } = to;
        if (address.domain === '') return Replies.recipientOk; // <Postmaster>
        if (!domains.has(address.asciiDomain)) return undefined;
        const local = unquotedLocalPart(address.localPart).toLowerCase();
        if (local === 'postmaster') return Replies.recipientOk;
        if (mailboxes?.has(local) || mailboxes?.has(`${local}@${address.asciiDomain}`))
          return Replies.recipientOk;
        if (isRoutingLocalPart(local)) return routedLocalPart;
        return mailboxes ? Replies.noSuchUser : Replies.recipientOk;
      },
      { stage: Stage.LATE },
    );
  },
});
