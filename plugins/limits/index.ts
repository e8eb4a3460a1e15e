/**
 * LIMITS (RFC 9422): tell clients the limits this server applies, so they can
 * split work instead of failing: RCPTMAX is the core's `limits.maxRecipients`
 * (more recipients get 452 4.5.3), MAILMAX an optional cap on MAIL commands per
 * connection, enforced here.
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Session } from '../../core/types.ts';

export const schema = Type.Object(
  {
    mailMax: Type.Optional(
      Type.Integer({
        minimum: 1,
        description:
          'MAIL commands one connection may send (MAILMAX). Past it, MAIL gets 421 4.7.0 and the connection closes, so the client reconnects. Absent: no limit, not advertised.',
      }),
    ),
  },
  { additionalProperties: false },
);

const tooManyTransactions = reply(
  421,
  '4.7.0',
  'Too many transactions on this connection; reconnect to send more',
  true,
);

export default definePlugin({
  name: 'limits',
  description: 'RFC 9422 LIMITS: advertises RCPTMAX and an optional MAILMAX, which it enforces.',
  schema,
  register(api, config) {
    const rcptMax = api.server.limits.maxRecipients;
    const { mailMax } = config;
    const keyword = `LIMITS RCPTMAX=${rcptMax}${mailMax === undefined ? '' : ` MAILMAX=${mailMax}`}`;
    api.hooks.capabilities.tap((keywords) => {
      keywords.push(keyword);
      return keywords;
    });
    if (mailMax === undefined) return;
    /** MAIL commands seen per connection (a connection's count outlives RSET and EHLO). */
    const seen = new WeakMap<Session, number>();
    api.hooks.mail.tap(
      (tx) => {
        const n = (seen.get(tx.session) ?? 0) + 1;
        seen.set(tx.session, n);
        return n > mailMax ? tooManyTransactions : undefined;
      },
      { stage: Stage.FIRST },
    );
  },
});
