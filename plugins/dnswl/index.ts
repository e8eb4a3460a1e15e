/**
 * DNS allow lists (RFC 5782), such as list.dnswl.org: the client's address
 * looked up in each configured zone when it connects, recorded as check
 * `dnswl` (`pass` listed, `none` not listed, `temperror` no answer in time),
 * shown in Authentication-Results as method `dnswl` (RFC 8904) with
 * `dns.zone` and `policy.ip`. Other checks ask the `dnswl` service whether
 * the client is listed: `dnsbl` then does not refuse it, and a greylist can
 * let it through.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import type { Session } from '../../core/types.ts';
import { dnsListsOf, type ListResult, listSettings } from '../dnsbl/lists.ts';
import { connectionCheck } from '../policy/connection-checks.ts';
import { actionsSchema, validateActions } from '../policy/policy.ts';

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    dnswl: ListResult;
  }
}

/** The `dnswl` service: whether a session's client is on an allow list. */
export interface DnswlService {
  /** The client's results, one per zone (the lookups start at connect; this waits for them). */
  results(session: Session): Promise<readonly ListResult[]>;
  /** Some zone lists the client. */
  listed(session: Session): Promise<boolean>;
}

declare module '../../core/plugin.ts' {
  interface Services {
    dnswl: DnswlService;
  }
}

declare module '../../core/types.ts' {
  interface SessionNotes {
    /** The client's DNS allow list results, one per zone (set at MAIL FROM). */
    dnswl?: readonly ListResult[];
  }
}

export const schema = Type.Object(
  {
    ...listSettings,
    actions: actionsSchema('dnswl', {}),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'dnswl',
  description:
    'DNS allow lists (RFC 5782, RFC 8904): listed clients are recorded and exempt from DNSBL refusals.',
  schema,
  register(api, config) {
    validateActions('dnswl', config.actions);
    const lists = dnsListsOf(api, config);
    const check = connectionCheck(api, {
      check: 'dnswl',
      trigger: 'connect',
      at: 'mail',
      actions: config.actions,
      skipAuthenticated: config.skipAuthenticated,
      evaluate: (session) => lists.lookup(session.remote.address, { listed: 'pass', clear: 'none' }),
      settled: (session, results) => {
        session.notes.dnswl = results;
      },
    });
    api.provide('dnswl', {
      results: (session) => check.results(session),
      listed: async (session) => (await check.results(session)).some((r) => r.result === 'pass'),
    });
  },
});
