/**
 * DNS block lists (RFC 5782): the client's address looked up in each
 * configured zone, all in parallel, when it connects. Each zone's answer is
 * recorded as a result of check `dnsbl` (`fail` listed, `none` not listed,
 * `temperror` no answer in time) with the zone and return code; the action map
 * decides, by default `550 5.7.1` naming the zone at RCPT TO (see `at`). A
 * client a DNS allow list (`dnswl`) lists is never refused nor quarantined by
 * this check.
 * `dnsbl` is not an Authentication-Results method: the results are for
 * policy, the log and scanners, not the header.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import { connectionCheck, decisionPointSchema } from '../policy/connection-checks.ts';
import { actionsSchema, validateActions } from '../policy/policy.ts';
import { dnsListsOf, type ListResult, listSettings } from './lists.ts';

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    dnsbl: ListResult;
  }
}

declare module '../../core/types.ts' {
  interface SessionNotes {
    /** The client's DNS block list results, one per zone (set at MAIL FROM). */
    dnsbl?: readonly ListResult[];
  }
}

export const schema = Type.Object(
  {
    ...listSettings,
    at: decisionPointSchema(
      ['connect', 'mail', 'rcpt'],
      'rcpt',
      'At `rcpt` (as Postfix does) the refusal comes with the envelope in the log, mail to postmaster can still arrive, and clients that retry at once after a refused greeting do not hammer the server; `connect` saves the most work.',
    ),
    allowPostmaster: Type.Boolean({
      default: true,
      description: 'At `rcpt`, let listed clients still reach postmaster (RFC 5321 4.5.1).',
    }),
    actions: actionsSchema('dnsbl', { fail: { action: 'reject' } }),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'dnsbl',
  description:
    'DNS block lists (RFC 5782), IPv4 and IPv6: a listed client is refused (550 5.7.1 naming the list) or tagged.',
  schema,
  register(api, config) {
    validateActions('dnsbl', config.actions);
    const lists = dnsListsOf(api, config);
    connectionCheck(api, {
      check: 'dnsbl',
      trigger: 'connect',
      at: config.at,
      actions: config.actions,
      skipAuthenticated: config.skipAuthenticated,
      allowPostmaster: config.allowPostmaster,
      evaluate: (session) => lists.lookup(session.remote.address, { listed: 'fail', clear: 'none' }),
      replies: (session, result) => {
        const text = `Client host [${session.remote.address}] blocked using ${result.zone}`;
        return {
          reject: reply(550, '5.7.1', text),
          tempfail: reply(
            451,
            '4.7.1',
            `Client host [${session.remote.address}] not checked, try again later`,
          ),
        };
      },
      // A DNSWL listing wins over a DNSBL one (the dnswl plugin, when loaded, says).
      mayRefuse: async (session) => !(await api.service('dnswl')?.listed(session)),
      settled: (session, results) => {
        session.notes.dnsbl = results;
      },
    });
  },
});
