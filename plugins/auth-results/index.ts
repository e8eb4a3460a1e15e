/**
 * One Authentication-Results header field (RFC 8601) for every check result
 * recorded on the transaction (see docs/policy.md), with this server's
 * authserv-id; put on top of the message at the end of the `message` hook,
 * once every check (SPF at MAIL, DKIM and DMARC after the data) has reported.
 * Fields of the arriving message that claim our authserv-id are forgeries
 * (or our own, from a loop) and are removed first (RFC 8601 section 5).
 *
 * The authserv-id is published as the `authserv` service, so that every
 * plugin naming this server in results (ARC's ARC-Authentication-Results)
 * uses the same one.
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import type { Message, Transaction } from '../../core/types.ts';
import { cachedMessageHeader } from '../policy/message-header.ts';
import { allResults } from '../policy/policy.ts';
import { authenticationResults, authservIdOf, registeredResults } from './format.ts';

/** The authserv-id this server writes in Authentication-Results (the `authserv` service). */
export interface AuthservService {
  readonly id: string;
}

declare module '../../core/plugin.ts' {
  interface Services {
    authserv: AuthservService;
  }
}

export const schema = Type.Object(
  {
    authservId: Type.Optional(
      Type.String({
        minLength: 1,
        pattern: "^[!#$%&'*+\\-.0-9A-Z^_`a-z{|}~]+$",
        description:
          'The authserv-id naming this server in the field (RFC 8601 2.5), and in ARC-Authentication-Results (`arc` reads it). Default: the server’s `hostname`.',
      }),
    ),
    includeNone: Type.Boolean({
      default: true,
      description: 'Add `<authserv-id>; none` when no check reported anything (RFC 8601 2.2).',
    }),
    removeIncoming: Type.Boolean({
      default: true,
      description:
        'Remove Authentication-Results fields of the arriving message that claim this authserv-id (RFC 8601 section 5: they are forged, or ours from a loop). Fields of other authserv-ids are kept.',
    }),
  },
  { additionalProperties: false },
);

/** The name anywhere in the header section: where it is not, no field can be removed. */
const ANY_AUTH_RESULTS = /authentication-results/i;

export default definePlugin({
  name: 'auth-results',
  description: 'Adds one Authentication-Results header field (RFC 8601) from the recorded check results.',
  schema,
  register(api, config) {
    const authservId = config.authservId ?? api.server.hostname;
    const ours = authservId.toLowerCase();
    api.provide('authserv', { id: authservId });
    // After every check (DKIM and DMARC record at the `message` hook), the field goes on top of the message.
    const add = (tx: Transaction, message: Message) => {
      const results = registeredResults(allResults(tx));
      if (results.length > 0 || config.includeNone)
        message.prepend([authenticationResults(authservId, results, tx.utf8)]);
      return undefined;
    };
    const remove = async (tx: Transaction, message: Message) => {
      const removed = await message.removeFields(
        (name, field) => name === 'authentication-results' && authservIdOf(field)?.toLowerCase() === ours,
      );
      if (removed > 0)
        tx.log.info({ removed }, 'removed incoming Authentication-Results claiming our authserv-id');
      return add(tx, message);
    };
    api.hooks.message.tap(
      (tx, message) => {
        if (!config.removeIncoming) return add(tx, message);
        // Most messages have no such field at all: when a check parsed the header already, a look at it
        // spares reading the header section again (and a promise).
        const header = cachedMessageHeader(tx, message);
        if (header !== undefined && !ANY_AUTH_RESULTS.test(header.text)) return add(tx, message);
        return remove(tx, message);
      },
      { stage: Stage.LAST },
    );
  },
});
