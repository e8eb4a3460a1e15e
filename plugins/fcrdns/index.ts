/**
 * Forward-confirmed reverse DNS, the `iprev` of RFC 8601 section 3: the
 * client address's PTR names, then each name's A (IPv4 client) or AAAA (IPv6)
 * records; confirmed when one of them is the client's address. Recorded as
 * check `fcrdns`, shown in Authentication-Results as `iprev` with
 * `policy.iprev` (the address), with the RFC 8601 2.7.3 results:
 *
 *   pass       a PTR name resolves back to the address (the name is the result's `name`)
 *   fail       PTR names exist, but none resolves back to the address
 *   permerror  no PTR records (NXDOMAIN or no data): the check cannot be done
 *   temperror  a DNS error or timeout (of the PTR lookup, or of every forward lookup that might have matched)
 *
 * By default it only records; the action map can refuse.
 */
import { isIP } from 'node:net';
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Session } from '../../core/types.ts';
import { reverseDnsName, sameAddress, within } from '../dnsbl/lists.ts';
import { connectionCheck, decisionPointSchema } from '../policy/connection-checks.ts';
import { actionsSchema, type CheckResult, validateActions } from '../policy/policy.ts';

/** What `fcrdns` records. */
export interface FcrdnsResult extends CheckResult {
  /** The confirmed name (`pass`). */
  readonly name?: string;
  /** The PTR names (at most `maxNames`) that were checked. */
  readonly names: readonly string[];
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    fcrdns: FcrdnsResult;
  }
}

declare module '../../core/types.ts' {
  interface SessionNotes {
    /** The client's forward-confirmed reverse DNS (set at MAIL FROM). */
    fcrdns?: FcrdnsResult;
  }
}

export const schema = Type.Object(
  {
    maxNames: Type.Integer({
      minimum: 1,
      maximum: 20,
      default: 10,
      description:
        'PTR names whose addresses are looked up; more are ignored (a long PTR set costs lookups).',
    }),
    timeout: Type.Integer({
      minimum: 1,
      default: 5000,
      description: 'Milliseconds the whole check may take before it is `temperror`.',
    }),
    at: decisionPointSchema(['connect', 'mail', 'rcpt'], 'mail', 'Only matters when an action refuses.'),
    skipAuthenticated: Type.Boolean({
      default: true,
      description: 'Neither check nor refuse sessions that authenticated (AUTH).',
    }),
    actions: actionsSchema('fcrdns', {}),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'fcrdns',
  description:
    'Forward-confirmed reverse DNS (iprev, RFC 8601): recorded for policy and Authentication-Results.',
  schema,
  register(api, config) {
    validateActions('fcrdns', config.actions);
    const dns = api.server.dns;

    async function confirm(address: string): Promise<Omit<FcrdnsResult, 'properties' | 'method'>> {
      const ptrName = reverseDnsName(address);
      if (ptrName === undefined) return { result: 'permerror', names: [], reason: 'not an IP address' };
      const ptr = await dns.lookup(ptrName, 'PTR');
      if (ptr.kind === 'error')
        return { result: 'temperror', names: [], reason: `PTR lookup: ${ptr.reason}` };
      if (ptr.kind !== 'answer') return { result: 'permerror', names: [], reason: 'no PTR record' };
      const names = [...new Set(ptr.records)].slice(0, config.maxNames);
      const type = isIP(address) === 4 ? 'A' : 'AAAA';
      const forward = await Promise.all(names.map((name) => dns.lookup(name, type)));
      const matched = names.find((_, i) => {
        const f = forward[i];
        return f?.kind === 'answer' && f.records.some((a) => sameAddress(a, address));
      });
      if (matched !== undefined) return { result: 'pass', name: matched, names, reason: matched };
      if (forward.some((f) => f.kind === 'error'))
        return { result: 'temperror', names, reason: `${type} lookup of ${names.join(', ')} failed` };
      return { result: 'fail', names, reason: `${names.join(', ')} does not resolve to the address` };
    }

    async function evaluate(session: Session): Promise<FcrdnsResult[]> {
      const address = session.remote.address;
      const found = await within(confirm(address), config.timeout, {
        result: 'temperror',
        names: [],
        reason: 'timed out',
      });
      return [{ ...found, method: 'iprev', properties: { 'policy.iprev': address } }];
    }

    connectionCheck(api, {
      check: 'fcrdns',
      trigger: 'connect',
      at: config.at,
      actions: config.actions,
      skipAuthenticated: config.skipAuthenticated,
      evaluate,
      replies: (session) => ({
        reject: reply(550, '5.7.25', `Reverse DNS validation failed for [${session.remote.address}]`),
        tempfail: reply(451, '4.7.25', 'Reverse DNS validation failed, try again later'),
      }),
      settled: (session, results) => {
        const [first] = results;
        if (first !== undefined) session.notes.fcrdns = first;
      },
    });
  },
});
