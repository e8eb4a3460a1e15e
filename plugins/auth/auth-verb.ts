/**
 * The AUTH command (RFC 4954 section 4): pick a mechanism, run its `334`
 * exchange, ask the credential plugins, answer `235`, `535` or `454`.
 * Secrets are never logged; the user name is (operators need it).
 */
import { isReply } from '../../core/hooks.ts';
import type { ServerFacts, VerbDefinition } from '../../core/plugin.ts';
import { isPositive, Replies, type Reply, reply } from '../../core/reply.ts';
import type { AuthRequest, Session } from '../../core/types.ts';
import type { AuthAnswer } from './credentials.ts';
import {
  decodeBase64,
  decodeInitialResponse,
  type Mechanism,
  type MechanismName,
  type SaslExchange,
  SaslStop,
} from './sasl.ts';

export const AuthReplies = Object.freeze({
  success: reply(235, '2.7.0', 'Authentication successful'),
  alreadyAuthenticated: reply(503, '5.5.1', 'Already authenticated'),
  syntax: reply(501, '5.5.4', 'Syntax: AUTH mechanism [initial-response]'),
  unknownMechanism: reply(504, '5.5.4', 'Unrecognized authentication type'),
  encryptionRequired: reply(538, '5.7.11', 'Encryption required for requested authentication mechanism'),
  badBase64: reply(501, '5.5.2', 'Cannot decode response'),
  malformed: reply(501, '5.5.2', 'Malformed authentication response'),
  cancelled: reply(501, '5.0.0', 'Authentication cancelled'),
  invalid: reply(535, '5.7.8', 'Authentication credentials invalid'),
  tempFailure: reply(454, '4.7.0', 'Temporary authentication failure'),
  tooManyFailures: reply(421, '4.7.0', 'Too many authentication failures, closing connection', true),
});

export interface AuthVerbOptions {
  readonly mechanisms: ReadonlyMap<MechanismName, Mechanism>;
  readonly allowInsecureAuth: boolean;
  readonly maxFailures: number;
  readonly server: ServerFacts;
  /** Sessions this plugin instance serves (its `listeners` scope). */
  readonly serves: (session: Session) => boolean;
}

/** Whether AUTH may be used on this session now (TLS, or insecure AUTH allowed). */
export function authAllowed(session: Session, allowInsecureAuth: boolean): boolean {
  return session.tls !== undefined || allowInsecureAuth;
}

type Outcome = { readonly user: string } | { readonly failure: Reply } | { readonly reply: Reply };

/** Turn what the credential plugins answered into an identity, a failure or another reply. */
function judge(answer: AuthAnswer, request: AuthRequest, session: Session): Outcome {
  if (answer === undefined) {
    session.log.warn({ mechanism: request.mechanism }, 'no plugin answered the auth hook');
    return { reply: AuthReplies.tempFailure };
  }
  if (isReply(answer)) {
    if (isPositive(answer)) return identity(request.username);
    if (answer.code >= 500) return { failure: answer };
    // A failing or timed-out tap (451 4.3.0) is a temporary authentication failure here.
    return { reply: answer.code === 451 ? AuthReplies.tempFailure : answer };
  }
  if (!answer.ok) return { failure: AuthReplies.invalid };
  return identity(answer.user ?? request.username);
}

function identity(user: string): Outcome {
  return user === '' ? { failure: AuthReplies.invalid } : { user };
}

/**
 * `AUTH mechanism [initial-response]`: the mechanism name as sent, and the
 * initial response (`false` when more than one word follows the name).
 * Undefined when there is no mechanism name at all.
 */
export function parseAuthArgument(
  argument: string,
): { readonly mechanism: string; readonly initial: string | false | undefined } | undefined {
  const space = argument.indexOf(' ');
  const mechanism = space < 0 ? argument : argument.slice(0, space);
  if (mechanism === '') return undefined;
  if (space < 0) return { mechanism, initial: undefined };
  const rest = argument.slice(space + 1);
  return { mechanism, initial: /^\S+$/.test(rest) ? rest : false };
}

export function authVerb(opts: AuthVerbOptions): VerbDefinition {
  const failures = new WeakMap<Session, number>();
  return {
    name: 'AUTH',
    outsideTransaction: true, // RFC 4954 section 4: AUTH during a transaction is 503
    async handler(ctx) {
      const { session } = ctx;
      if (!opts.serves(session)) return Replies.unknownCommand;
      if (session.user !== undefined) return AuthReplies.alreadyAuthenticated;
      const command = parseAuthArgument(ctx.argument);
      if (!command) return AuthReplies.syntax;
      // RFC 4954 section 4: a mechanism the server does not offer is 504, whatever its name looks like.
      const mechanism = opts.mechanisms.get(command.mechanism.toUpperCase() as MechanismName);
      if (!mechanism) return AuthReplies.unknownMechanism;
      if (command.initial === false) return AuthReplies.syntax;
      if (!authAllowed(session, opts.allowInsecureAuth)) return AuthReplies.encryptionRequired;
      let initial: Buffer | undefined;
      if (command.initial !== undefined) {
        initial = decodeInitialResponse(command.initial);
        if (!initial) return AuthReplies.badBase64;
      }
      const exchange: SaslExchange = {
        initial,
        async challenge(data) {
          ctx.send(reply(334, undefined, Buffer.from(data, 'utf8').toString('base64')));
          const line = await ctx.readLine();
          if (line === undefined) throw new SaslStop('closed');
          if (line === '*') throw new SaslStop('cancelled');
          const decoded = decodeBase64(line);
          if (!decoded) throw new SaslStop('bad-base64');
          return decoded;
        },
      };

      const fail = async (r: Reply, username: string | undefined): Promise<Reply | undefined> => {
        const count = (failures.get(session) ?? 0) + 1;
        failures.set(session, count);
        session.log.info(
          { mechanism: mechanism.name, username: username?.slice(0, 64), failures: count },
          'authentication failed',
        );
        return count > opts.maxFailures ? AuthReplies.tooManyFailures : r;
      };

      try {
        const result = await mechanism.run(exchange);
        if (!result.ok) {
          return fail(result.failure === 'invalid' ? AuthReplies.invalid : AuthReplies.malformed, undefined);
        }
        const { request } = result;
        const outcome = judge(await ctx.checkCredentials(request), request, session);
        if ('reply' in outcome) return outcome.reply;
        if ('failure' in outcome) {
          if (mechanism.reportFailure) {
            try {
              await mechanism.reportFailure({ initial: undefined, challenge: exchange.challenge });
            } catch (err) {
              if (err instanceof SaslStop && err.reason === 'closed') return undefined;
            }
          }
          return fail(outcome.failure, request.username);
        }
        session.authenticate(outcome.user);
        session.notes.auth = { mechanism: mechanism.name, user: outcome.user };
        session.log.info({ mechanism: mechanism.name }, 'authenticated');
        return AuthReplies.success;
      } catch (err) {
        if (!(err instanceof SaslStop)) throw err;
        if (err.reason === 'closed') return undefined;
        return err.reason === 'cancelled' ? AuthReplies.cancelled : AuthReplies.badBase64;
      }
    },
  };
}
