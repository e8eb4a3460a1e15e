/**
 * Greylisting: the first attempt of a new (client network, sender,
 * recipient) triplet is refused for now at RCPT (450 4.7.1); a retry after
 * `delay` and within `retryWindow` passes, and the passed triplet is
 * remembered for `lifetime` after its last use. Real MTAs retry; much spam
 * software does not. The state is the shared `policyState` service (the
 * `policy-store` plugin, or a database-backed store), so it survives
 * restarts and, on a shared database, spans nodes.
 *
 * It follows the policy model: each recipient's result (check `greylist`:
 * `fail` greylisted, `pass` known triplet, `none` allow-listed, `temperror`
 * the store failed) is recorded, and the `actions` map decides.
 */
import Type, { type Static } from 'typebox';
import { domainKey } from '../../core/address.ts';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { type Reply, reply } from '../../core/reply.ts';
import type { Address, Transaction } from '../../core/types.ts';
import { clientNetwork, networkMatcher } from '../policy/networks.ts';
import {
  actionsSchema,
  allResults,
  type CheckResult,
  type DefaultReplies,
  report,
  validateActions,
} from '../policy/policy.ts';
import type {
  GreylistEntry,
  GreylistStatus,
  GreylistTimes,
  MaybePromise,
  PolicyStateStore,
} from '../policy/state-store.ts';
import { formatDuration, requireDuration } from '../queue/duration.ts';

/** What `greylist` records for each recipient. */
export interface GreylistResult extends CheckResult {
  /** The triplet's state (absent when it was not looked up: allow-listed, or the store failed). */
  readonly status?: GreylistStatus;
  /** The triplet key: `network|sender|recipient`. */
  readonly triplet?: string;
  /** For `fail`: milliseconds until a retry passes. */
  readonly retryAfterMs?: number;
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    greylist: GreylistResult;
  }
}

const Domains = (description: string) =>
  Type.Array(Type.String({ minLength: 1 }), { default: [], description });

export const schema = Type.Object(
  {
    delay: Type.String({
      default: '5m',
      description: 'How long after the first attempt a retry passes (`5m`, `300s`).',
    }),
    retryWindow: Type.String({
      default: '2d',
      description:
        'How long after the first attempt a retry still counts; an unpassed triplet older than this starts over.',
    }),
    lifetime: Type.String({
      default: '35d',
      description: 'How long a passed triplet is remembered after its last use (each use renews it).',
    }),
    ipv4Prefix: Type.Integer({
      minimum: 8,
      maximum: 32,
      default: 24,
      description: 'Clients in the same IPv4 network of this prefix length share triplets (24: a /24).',
    }),
    ipv6Prefix: Type.Integer({
      minimum: 16,
      maximum: 128,
      default: 64,
      description: 'Clients in the same IPv6 network of this prefix length share triplets (64: a /64).',
    }),
    allow: Type.Object(
      {
        networks: Type.Array(Type.String({ minLength: 1 }), {
          default: [],
          description: 'Client addresses or CIDRs never greylisted (`192.0.2.0/24`, `2001:db8::/32`).',
        }),
        senderDomains: Domains(
          'Sender domains never greylisted; each also covers its subdomains. Easily forged: prefer `networks` or `checks`.',
        ),
        recipientDomains: Domains(
          'Recipient domains never greylisted (e.g. a postmaster domain); each also covers its subdomains.',
        ),
        authenticated: Type.Boolean({
          default: true,
          description: 'Sessions that authenticated (AUTH) are never greylisted.',
        }),
        checks: Type.Array(Type.String({ minLength: 1 }), {
          default: ['dnswl'],
          description:
            'Policy checks whose `pass` recorded on the transaction before RCPT exempts the client (e.g. `dnswl`: listed on a DNS allow-list).',
        }),
      },
      { additionalProperties: false, default: {}, description: 'Who is never greylisted.' },
    ),
    actions: actionsSchema('greylist', { fail: { action: 'tempfail' } }),
  },
  { additionalProperties: false },
);

type Config = Static<typeof schema>;

/** RFC 3463 X.7.1 "delivery not authorized"; 450: the mailbox is unavailable for now (RFC 5321 4.2.2). */
function replies(retryAfterMs: number): DefaultReplies {
  const wait = formatDuration(Math.max(1000, retryAfterMs));
  return {
    tempfail: reply(450, '4.7.1', `Greylisted, try again in ${wait}`),
    reject: reply(550, '5.7.1', 'Refused by greylisting'),
  };
}

/** A matcher for domains and their subdomains, written as U-labels or A-labels. */
function domainMatcher(domains: readonly string[], setting: string): (address: Address | null) => boolean {
  const keys = new Set(
    domains.map((d) => {
      const key = domainKey(d);
      if (key === undefined) throw new Error(`${setting}: "${d}" is not a domain name`);
      return key;
    }),
  );
  if (keys.size === 0) return () => false;
  return (address) => {
    if (address === null || address.domainKind !== 'name') return false;
    let domain = address.asciiDomain;
    for (;;) {
      if (keys.has(domain)) return true;
      const dot = domain.indexOf('.');
      if (dot < 0) return false;
      domain = domain.slice(dot + 1);
    }
  };
}

function times(config: Config): GreylistTimes {
  const t = {
    delay: requireDuration(config.delay, 'delay'),
    retryWindow: requireDuration(config.retryWindow, 'retryWindow'),
    lifetime: requireDuration(config.lifetime, 'lifetime'),
  };
  if (t.retryWindow <= t.delay)
    throw new Error(`retryWindow (${config.retryWindow}) must be longer than delay (${config.delay})`);
  return t;
}

/** The lower-cased address, `''` for the null sender. */
function envelopeAddress(address: Address | null): string {
  return address === null ? '' : `${address.localPart}@${address.asciiDomain}`.toLowerCase();
}

export default definePlugin({
  name: 'greylist',
  description:
    'Greylisting at RCPT: a new (client network, sender, recipient) triplet gets 450 4.7.1 until it retries after a delay.',
  schema,
  register(api, config) {
    validateActions('greylist', config.actions);
    const greylistTimes = times(config);
    const allowNetwork = networkMatcher(config.allow.networks, 'allow.networks');
    const allowSender = domainMatcher(config.allow.senderDomains, 'allow.senderDomains');
    const allowRecipient = domainMatcher(config.allow.recipientDomains, 'allow.recipientDomains');
    const allowChecks = new Set(config.allow.checks);
    let store: PolicyStateStore | undefined;
    api.onStart(() => {
      store = api.service('policyState');
      if (store === undefined)
        throw new Error(
          'greylist needs a policy state store: add the `policy-store` plugin (or a database-backed one) to `plugins`',
        );
    });

    /** Why the transaction is never greylisted, or undefined. */
    function allowedBy(tx: Transaction, to: Address): string | undefined {
      const session = tx.session;
      if (config.allow.authenticated && session.user !== undefined) return 'authenticated';
      if (allowNetwork(session.remote.address)) return 'allow-listed network';
      if (allowSender(tx.from.address)) return 'allow-listed sender domain';
      if (allowRecipient(to)) return 'allow-listed recipient domain';
      for (const r of allResults(tx))
        if (allowChecks.has(r.check) && r.result.result === 'pass') return `${r.check} pass`;
      return undefined;
    }

    /** What policy says about one triplet's entry. */
    function decideEntry(
      tx: Transaction,
      triplet: string,
      now: number,
      entry: GreylistEntry,
    ): Reply | undefined {
      if (entry.status === 'passed') {
        const result: GreylistResult = { result: 'pass', status: entry.status, triplet };
        return report(tx, 'greylist', result, config.actions);
      }
      const retryAfterMs = entry.firstSeen + greylistTimes.delay - now;
      const result: GreylistResult = {
        result: 'fail',
        reason: entry.status === 'new' ? 'new triplet' : 'retried too early',
        status: entry.status,
        triplet,
        retryAfterMs,
      };
      tx.log.debug({ triplet, status: entry.status, retryAfterMs }, 'greylisted');
      return report(tx, 'greylist', result, config.actions, replies(retryAfterMs));
    }

    /** The store failed: `temperror`, which is accepted unless the action map says otherwise. */
    function storeFailed(tx: Transaction, triplet: string, err: unknown): Reply | undefined {
      tx.log.warn({ err, triplet }, 'greylist store failed');
      const result: GreylistResult = { result: 'temperror', reason: 'store failed', triplet };
      return report(tx, 'greylist', result, config.actions);
    }

    api.hooks.rcpt.tap(
      // Synchronous while the store answers synchronously (the embedded one does): no promise per RCPT.
      (tx, to) => {
        const recipient = to.address;
        // `<Postmaster>` must always be reachable (RFC 5321 4.5.1).
        if (recipient.domain === '') return undefined;
        const why = allowedBy(tx, recipient);
        if (why !== undefined) return report(tx, 'greylist', { result: 'none', reason: why }, config.actions);
        const network = clientNetwork(tx.session.remote.address, config.ipv4Prefix, config.ipv6Prefix);
        const triplet = `${network}|${envelopeAddress(tx.from.address)}|${envelopeAddress(recipient)}`;
        const now = api.server.clock.now();
        let entry: MaybePromise<GreylistEntry>;
        try {
          entry = (store as PolicyStateStore).greylistSeen(triplet, now, greylistTimes);
        } catch (err) {
          return storeFailed(tx, triplet, err);
        }
        if (!(entry instanceof Promise)) return decideEntry(tx, triplet, now, entry);
        return entry.then(
          (e) => decideEntry(tx, triplet, now, e),
          (err: unknown) => storeFailed(tx, triplet, err),
        );
      },
      // Before acceptance at LATE. Within NORMAL, list greylist after the other RCPT checks: a 5xx beats a 450.
      { stage: Stage.NORMAL },
    );
  },
});
