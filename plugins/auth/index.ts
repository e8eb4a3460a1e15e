/**
 * SMTP AUTH (RFC 4954): the AUTH command with PLAIN, LOGIN, XOAUTH2 and
 * OAUTHBEARER, the MAIL `AUTH=` parameter, AUTH required before MAIL on
 * submission listeners (RFC 6409 section 4.3), and relaying for
 * authenticated users. Credentials are checked by whichever plugin answers
 * the `auth` hook (e.g. `auth-users-file`).
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { Replies, reply } from '../../core/reply.ts';
import type { Session } from '../../core/types.ts';
import { authParam } from './auth-param.ts';
import { authAllowed, authVerb } from './auth-verb.ts';
import { MECHANISM_NAMES, MECHANISMS, type Mechanism, type MechanismName } from './sasl.ts';

declare module '../../core/types.ts' {
  interface SessionNotes {
    /** Set by the `auth` plugin after a successful AUTH. */
    auth?: { readonly mechanism: string; readonly user: string };
  }
  interface EnvelopeAttributes {
    /**
     * The MAIL `AUTH=` parameter as recorded (RFC 4954 section 5): the mailbox
     * the authenticated client vouched for, or `<>` when unknown or not trusted.
     */
    auth?: string;
  }
}

/** RFC 4954 section 4: AUTH lines (command and responses) may be up to 12288 octets. */
export const AUTH_LINE_LENGTH = 12288;
/** RFC 4954 section 5: the AUTH parameter lengthens MAIL by up to 500 octets. */
const AUTH_PARAM_OCTETS = 500;

export const schema = Type.Object(
  {
    mechanisms: Type.Array(Type.Union(MECHANISM_NAMES.map((n) => Type.Literal(n))), {
      default: ['PLAIN', 'LOGIN'],
      minItems: 1,
      uniqueItems: true,
      description:
        'SASL mechanisms offered, in this order. XOAUTH2 and OAUTHBEARER need a plugin that checks bearer tokens.',
    }),
    allowInsecureAuth: Type.Boolean({
      default: false,
      description:
        'Offer and accept AUTH without TLS. Passwords then cross the network in clear: for tests and trusted loopback only.',
    }),
    requireAuth: Type.Optional(
      Type.Boolean({
        description:
          'Refuse MAIL with 530 5.7.0 until the client authenticated. Default: on for listeners with role `submission` (RFC 6409 section 4.3), off elsewhere.',
      }),
    ),
    relayAuthenticated: Type.Boolean({
      default: true,
      description:
        'Accept any recipient from an authenticated client (as the last RCPT fallback, after local mailbox checks).',
    }),
    maxFailures: Type.Integer({
      minimum: 0,
      default: 3,
      description:
        'Failed AUTH attempts allowed per connection (each answered 535 5.7.8); the next failure closes it with 421 4.7.0.',
    }),
  },
  { additionalProperties: false },
);

const authRequired = reply(530, '5.7.0', 'Authentication required');

export default definePlugin({
  name: 'auth',
  description: 'SMTP AUTH (RFC 4954): PLAIN, LOGIN, XOAUTH2, OAUTHBEARER; AUTH required on submission.',
  schema,
  register(api, config) {
    const mechanisms = new Map<MechanismName, Mechanism>();
    for (const name of config.mechanisms) mechanisms.set(name, MECHANISMS.get(name) as Mechanism);
    const advertised = `AUTH ${config.mechanisms.join(' ')}`;

    // Sessions this plugin instance serves (its `listeners` scope): the connect hook only fires for those.
    const served = new WeakSet<Session>();
    api.hooks.connect.tap(
      (session) => {
        served.add(session);
        return undefined;
      },
      { stage: Stage.FIRST },
    );

    api.registerVerb({
      ...authVerb({
        mechanisms,
        allowInsecureAuth: config.allowInsecureAuth,
        maxFailures: config.maxFailures,
        server: api.server,
        serves: (s) => served.has(s),
      }),
      maxLineLength: AUTH_LINE_LENGTH,
    });
    api.registerParam({ ...authParam, lineLength: AUTH_PARAM_OCTETS });

    api.hooks.capabilities.tap((keywords, session) => {
      // RFC 4954 section 4 / RFC 8314: plaintext mechanisms only under TLS unless configured otherwise.
      if (authAllowed(session, config.allowInsecureAuth)) keywords.push(advertised);
      return keywords;
    });

    api.hooks.mail.tap(
      (tx) => {
        const session = tx.session;
        const required = config.requireAuth ?? session.listener.role === 'submission';
        return required && session.user === undefined ? authRequired : undefined;
      },
      { stage: Stage.FIRST },
    );

    if (config.relayAuthenticated) {
      api.hooks.rcpt.tap((tx) => (tx.session.user !== undefined ? Replies.recipientOk : undefined), {
        stage: Stage.LAST,
      });
    }
  },
});
