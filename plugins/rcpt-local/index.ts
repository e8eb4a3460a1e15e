/**
 * Accept recipients at the local domains: any mailbox, or only the listed
 * ones (550 5.1.1 for the rest). Postmaster is always accepted (RFC 5321 4.5.1).
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { Replies } from '../../core/reply.ts';

export const schema = Type.Object(
  {
    domains: Type.Array(Type.String({ minLength: 1 }), {
      default: ['localhost'],
      description: 'Domains this server is the final destination for (case-insensitive).',
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

export default definePlugin({
  name: 'rcpt-local',
  description: 'Accepts recipients at local domains, optionally only listed mailboxes.',
  schema,
  register(api, config) {
    const domains = new Set(config.domains.map((d) => d.toLowerCase()));
    const mailboxes = config.mailboxes ? new Set(config.mailboxes.map((m) => m.toLowerCase())) : undefined;
    api.hooks.rcpt.tap(
      (_tx, to) => {
        const { address } = to;
        if (address.domain === '') return Replies.recipientOk; // <Postmaster>
        if (!domains.has(address.asciiDomain)) return undefined;
        const local = address.localPart.toLowerCase();
        if (!mailboxes || local === 'postmaster') return Replies.recipientOk;
        if (mailboxes.has(local) || mailboxes.has(`${local}@${address.asciiDomain}`))
          return Replies.recipientOk;
        return Replies.noSuchUser;
      },
      { stage: Stage.LATE },
    );
  },
});
