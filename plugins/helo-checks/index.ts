/**
 * Checks of the name a client gives in EHLO/HELO, each recorded as a result
 * of check `helo` with the test's name in `test`, and each with its own
 * action map. RFC 5321 4.1.4 forbids refusing a session only because the
 * name does not match the address, so the defaults only record, except for a
 * client that claims to be this server (`forged`), refused with 550 5.7.1 as
 * Postfix's `reject_*_helo_hostname` restrictions would be configured:
 *
 *   fqdn      the name is a syntactically valid host name with a dot (pass/fail; not for address literals)
 *   forged    the name is this server's host name (or one of `ownNames`), or its address, bare or in
 *             brackets, from a client that is not this host (pass/fail)
 *   bareIp    the name is an IP address without the brackets of an address literal (pass/fail)
 *   literal   an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is the client's address (pass/fail)
 *   resolves  the name has A, AAAA or MX records (pass; fail when none; temperror on DNS errors)
 *
 * A test that does not apply to the name (a literal's `fqdn`) records nothing.
 */
import { isIP } from 'node:net';
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Session } from '../../core/types.ts';
import { sameAddress, within } from '../dnsbl/lists.ts';
import { connectionCheck, decisionPointSchema } from '../policy/connection-checks.ts';
import { type ActionMap, actionsSchema, type CheckResult, validateActions } from '../policy/policy.ts';

const TESTS = ['fqdn', 'forged', 'bareIp', 'literal', 'resolves'] as const;
export type HeloTest = (typeof TESTS)[number];

/** What `helo-checks` records, one per test that applied. */
export interface HeloResult extends CheckResult {
  readonly test: HeloTest;
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    helo: HeloResult;
  }
}

declare module '../../core/types.ts' {
  interface SessionNotes {
    /** The EHLO name's test results (set at MAIL FROM). */
    helo?: readonly HeloResult[];
  }
}

export const schema = Type.Object(
  {
    actions: Type.Object(
      {
        fqdn: actionsSchema('the `fqdn` test', {}),
        forged: actionsSchema('the `forged` test', { fail: { action: 'reject' } }),
        bareIp: actionsSchema('the `bareIp` test', {}),
        literal: actionsSchema('the `literal` test', {}),
        resolves: actionsSchema('the `resolves` test', {}),
      },
      { additionalProperties: false, default: {}, description: 'An action map per test.' },
    ),
    tests: Type.Array(Type.Union(TESTS.map((t) => Type.Literal(t))), {
      uniqueItems: true,
      default: [...TESTS],
      description: 'The tests to run (`resolves` is the only one that asks the DNS).',
    }),
    ownNames: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'Other names of this server that a client must not claim (the `hostname` always counts).',
    }),
    at: decisionPointSchema(
      ['ehlo', 'mail', 'rcpt'],
      'mail',
      'At `mail` the session’s AUTH is known, so authenticated clients are exempt; `ehlo` refuses the greeting itself.',
    ),
    timeout: Type.Integer({
      minimum: 1,
      default: 5000,
      description: 'Milliseconds the `resolves` lookups may take before they are `temperror`.',
    }),
    skipAuthenticated: Type.Boolean({
      default: true,
      description:
        'Neither check nor refuse sessions that authenticated (AUTH), as mail clients rarely have a proper name.',
    }),
    skipSubmission: Type.Boolean({
      default: true,
      description: 'Do not check sessions on `submission` listeners.',
    }),
  },
  { additionalProperties: false },
);

/** A host name: LDH labels (underscores tolerated), at least two, the last not all digits. */
const FQDN =
  /^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?\.?$/i;

/** The address of an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), if the name is one. */
function literalAddress(name: string): string | undefined {
  if (!name.startsWith('[') || !name.endsWith(']')) return undefined;
  const inner = name.slice(1, -1);
  const ip = /^ipv6:/i.test(inner) ? inner.slice(5) : inner;
  return isIP(ip) === 0 ? '' : ip;
}

export default definePlugin({
  name: 'helo-checks',
  description:
    'EHLO/HELO name checks (not a FQDN, forged as ours, bare IP, wrong literal, does not resolve).',
  schema,
  register(api, config) {
    const actionMaps = config.actions as Readonly<Record<HeloTest, ActionMap>>;
    for (const test of TESTS) validateActions(`helo-checks actions.${test}`, actionMaps[test] ?? {});
    const dns = api.server.dns;
    const enabled = new Set<HeloTest>(config.tests);
    const ownNames = new Set(
      [api.server.hostname, ...config.ownNames].map((n) => n.toLowerCase().replace(/\.$/, '')),
    );

    async function resolves(name: string): Promise<HeloResult> {
      const lookups = Promise.all([dns.lookup(name, 'A'), dns.lookup(name, 'AAAA'), dns.lookup(name, 'MX')]);
      const found = await within(lookups, config.timeout, undefined);
      if (found === undefined) return { test: 'resolves', result: 'temperror', reason: 'timed out' };
      if (found.some((f) => f.kind === 'answer')) return { test: 'resolves', result: 'pass' };
      if (found.some((f) => f.kind === 'error'))
        return { test: 'resolves', result: 'temperror', reason: 'DNS error' };
      return { test: 'resolves', result: 'fail', reason: 'no A, AAAA or MX records' };
    }

    async function evaluate(session: Session, helo: string | undefined): Promise<HeloResult[]> {
      if (helo === undefined) return [];
      const name = helo.toLowerCase();
      // Both as the core normalised them (an IPv4-mapped address as IPv4).
      const remote = session.remote.address;
      const local = session.local.address;
      const literal = literalAddress(name);
      const bare = isIP(name) !== 0 ? name : undefined;
      const out: HeloResult[] = [];
      const add = (test: HeloTest, ok: boolean, reason: string) => {
        if (enabled.has(test)) out.push({ test, result: ok ? 'pass' : 'fail', ...(ok ? {} : { reason }) });
      };
      if (literal === undefined) {
        add('fqdn', bare === undefined && FQDN.test(name), 'not a fully-qualified domain name');
        add('bareIp', bare === undefined, 'an IP address without brackets');
      } else {
        add(
          'literal',
          literal !== '' && sameAddress(literal, remote),
          'address literal is not the client’s address',
        );
      }
      const claimed = literal || bare;
      const forged =
        !sameAddress(remote, local) &&
        (ownNames.has(name.replace(/\.$/, '')) ||
          (claimed !== undefined && claimed !== '' && sameAddress(claimed, local)));
      add('forged', !forged, 'claims to be this server');
      if (enabled.has('resolves') && literal === undefined && bare === undefined && FQDN.test(name))
        out.push(await resolves(name.replace(/\.$/, '')));
      return out;
    }

    const tempfail = reply(451, '4.7.1', 'HELO/EHLO name not checked, try again later');
    connectionCheck(api, {
      check: 'helo',
      trigger: 'ehlo',
      at: config.at,
      actions: {},
      skipAuthenticated: config.skipAuthenticated,
      evaluate: async (session, helo) =>
        config.skipSubmission && session.listener.role === 'submission' ? [] : evaluate(session, helo),
      actionsFor: (result) => actionMaps[result.test] ?? {},
      replies: (_session, result) => ({
        reject: reply(550, '5.7.1', `Bad HELO/EHLO name (${result.test})`),
        tempfail,
      }),
      settled: (session, results) => {
        session.notes.helo = results;
      },
    });
  },
});
