/**
 * One Authentication-Results header field (RFC 8601) for every check result
 * recorded on the transaction (see docs/policy.md), with this server's
 * authserv-id; put on top of the message at the end of the `message` hook,
 * once every check (SPF at MAIL, DKIM and DMARC after the data) has reported.
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { allResults } from '../policy/policy.ts';
import { authenticationResults, registeredResults } from './format.ts';

export const schema = Type.Object(
  {
    authservId: Type.Optional(
      Type.String({
        minLength: 1,
        pattern: "^[!#$%&'*+\\-.0-9A-Z^_`a-z{|}~]+$",
        description:
          'The authserv-id naming this server in the field (RFC 8601 2.5). Default: the server’s `hostname`.',
      }),
    ),
    includeNone: Type.Boolean({
      default: true,
      description: 'Add `<authserv-id>; none` when no check reported anything (RFC 8601 2.2).',
    }),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'auth-results',
  description: 'Adds one Authentication-Results header field (RFC 8601) from the recorded check results.',
  schema,
  register(api, config) {
    const authservId = config.authservId ?? api.server.hostname;
    // After every check (DKIM and DMARC record at the `message` hook), the field goes on top of the message.
    api.hooks.message.tap(
      (tx, message) => {
        const results = registeredResults(allResults(tx));
        if (results.length > 0 || config.includeNone)
          message.prepend([authenticationResults(authservId, results)]);
        return undefined;
      },
      { stage: Stage.LAST },
    );
  },
});
