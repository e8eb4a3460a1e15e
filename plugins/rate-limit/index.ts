/**
 * Rate limits: token buckets per client address, client network,
 * authenticated user, sender domain or recipient, for connections, messages
 * and recipients. Each rule is a bucket of `burst` tokens (default `limit`)
 * refilled at `limit` per `per`; a connection, MAIL or RCPT takes one token
 * from the bucket of each rule that applies. The buckets are in the shared
 * `policyState` service (the `policy-store` plugin, or a database-backed
 * store), so every session, and on a shared database every node, draws on
 * the same ones.
 *
 * Over a connection limit the client gets `421 4.7.0` at connect and is
 * disconnected; over a message or recipient limit, `450 4.7.1` at MAIL or
 * RCPT (the `actions` map decides; check `rate-limit`).
 */
import Type, { type Static } from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { type Reply, reply } from '../../core/reply.ts';
import type { Address, Session, Transaction } from '../../core/types.ts';
import { clientNetwork, networkMatcher } from '../policy/networks.ts';
import {
  actionsSchema,
  type CheckResult,
  type DefaultReplies,
  report,
  validateActions,
} from '../policy/policy.ts';
import {
  andThen,
  type MaybePromise,
  type PolicyStateStore,
  type TakeResult,
  type TokenBucket,
} from '../policy/state-store.ts';
import { formatDuration, requireDuration } from '../queue/duration.ts';

const KEYS = ['ip', 'network', 'user', 'senderDomain', 'recipient'] as const;
type RuleKey = (typeof KEYS)[number];
const COUNTS = ['connections', 'messages', 'recipients'] as const;

const RuleSchema = Type.Object(
  {
    key: Type.Union(
      KEYS.map((k) => Type.Literal(k)),
      {
        description:
          'What a bucket is per: `ip` (client address), `network` (client /24 or /64), `user` (authenticated user), `senderDomain` (MAIL FROM domain), `recipient` (RCPT TO address).',
      },
    ),
    count: Type.Union(
      COUNTS.map((c) => Type.Literal(c)),
      {
        description:
          'What takes a token: `connections` (at connect; keys `ip` and `network` only), `messages` (at MAIL; with key `recipient`, at RCPT), `recipients` (at RCPT).',
      },
    ),
    limit: Type.Integer({ minimum: 1, description: 'Tokens refilled per `per`: the sustained rate.' }),
    per: Type.String({ minLength: 1, description: 'The period of `limit`: `1m`, `1h`, `1d`.' }),
    burst: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Bucket size: how many at once after a quiet spell. Default `limit`.',
      }),
    ),
  },
  { additionalProperties: false },
);

export const schema = Type.Object(
  {
    rules: Type.Array(RuleSchema, {
      default: [],
      description:
        'The limits, each a token bucket: `{ "key": "ip", "count": "connections", "limit": 30, "per": "1m" }`. Every rule that applies takes a token; the first one that has none left refuses.',
    }),
    ipv4Prefix: Type.Integer({
      minimum: 8,
      maximum: 32,
      default: 24,
      description: 'Prefix length of an IPv4 client’s `network`.',
    }),
    ipv6Prefix: Type.Integer({
      minimum: 16,
      maximum: 128,
      default: 64,
      description: 'Prefix length of an IPv6 client’s `network`.',
    }),
    exempt: Type.Object(
      {
        networks: Type.Array(Type.String({ minLength: 1 }), {
          default: [],
          description: 'Client addresses or CIDRs no rule applies to.',
        }),
        authenticated: Type.Boolean({
          default: false,
          description:
            'Authenticated sessions are exempt from every rule (and `user` rules then never apply).',
        }),
      },
      { additionalProperties: false, default: {}, description: 'Clients no limit applies to.' },
    ),
    actions: actionsSchema('rate-limit', { fail: { action: 'tempfail' } }),
  },
  { additionalProperties: false },
);

type Rule = Static<typeof RuleSchema>;

/** What `rate-limit` records: `pass` (every rule had a token) or `fail` (the rule that had none). */
export interface RateLimitResult extends CheckResult {
  /** The rule that refused: `ip:connections 30/1m`. */
  readonly rule?: string;
  /** For `fail`: milliseconds until the rule has a token again. */
  readonly retryAfterMs?: number;
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    'rate-limit': RateLimitResult;
  }
}

declare module '../../core/types.ts' {
  interface SessionNotes {
    /** The connection limits' verdict at connect (there is no transaction to record it on). */
    rateLimit?: RateLimitResult;
  }
}

/** When a rule's token is taken. */
type Moment = 'connect' | 'mail' | 'rcpt';

interface CompiledRule {
  readonly name: string;
  readonly key: RuleKey;
  readonly at: Moment;
  readonly bucket: TokenBucket;
}

function compile(rule: Rule, index: number): CompiledRule {
  const where = `rules/${index}`;
  const period = requireDuration(rule.per, `${where}/per`);
  if (period <= 0) throw new Error(`${where}/per: "${rule.per}" must be longer than 0`);
  let at: Moment;
  if (rule.count === 'connections') {
    if (rule.key !== 'ip' && rule.key !== 'network')
      throw new Error(
        `${where}: connections are counted at connect, where only \`ip\` and \`network\` are known, not \`${rule.key}\``,
      );
    at = 'connect';
  } else if (rule.count === 'messages' && rule.key !== 'recipient') at = 'mail';
  else at = 'rcpt';
  const capacity = rule.burst ?? rule.limit;
  const name = `${rule.key}:${rule.count} ${rule.limit}/${rule.per}${rule.burst === undefined ? '' : ` burst ${rule.burst}`}`;
  return { name, key: rule.key, at, bucket: { capacity, intervalMs: period / rule.limit } };
}

/** RFC 3463 X.7.1 "delivery not authorized" for MAIL and RCPT (450: try again later, RFC 5321 4.2.2). */
function messageReplies(what: 'messages' | 'recipients', retryAfterMs: number): DefaultReplies {
  const wait = formatDuration(Math.max(1000, retryAfterMs));
  return {
    tempfail: reply(450, '4.7.1', `Too many ${what}, try again in ${wait}`),
    reject: reply(550, '5.7.1', `Too many ${what}`),
  };
}

/** At connect only 421 closes politely (RFC 5321 3.1, 4.2.2: X.7.0 "other security status"); 554 refuses. */
const CONNECT_REPLIES: Readonly<Record<'tempfail' | 'reject', Reply>> = {
  tempfail: reply(421, '4.7.0', 'Too many connections, try again later', true),
  reject: reply(554, '5.7.1', 'Too many connections'),
};

function senderDomain(address: Address | null): string | undefined {
  return address === null ? undefined : address.asciiDomain;
}

export default definePlugin({
  name: 'rate-limit',
  description:
    'Token-bucket rate limits per client, network, user, sender domain or recipient: 421 at connect, 450 at MAIL/RCPT.',
  schema,
  register(api, config) {
    validateActions('rate-limit', config.actions);
    const rules = config.rules.map(compile);
    const byMoment = (at: Moment) => rules.filter((r) => r.at === at);
    const atConnect = byMoment('connect');
    const atMail = byMoment('mail');
    const atRcpt = byMoment('rcpt');
    const exemptNetwork = networkMatcher(config.exempt.networks, 'exempt.networks');
    let store: PolicyStateStore | undefined;
    api.onStart(() => {
      store = api.service('policyState');
      if (store === undefined && rules.length > 0)
        throw new Error(
          'rate-limit needs a policy state store: add the `policy-store` plugin (or a database-backed one) to `plugins`',
        );
    });

    const exempt = (session: Session): boolean =>
      (config.exempt.authenticated && session.user !== undefined) || exemptNetwork(session.remote.address);

    /** The bucket of `rule` for this client, or undefined when the rule does not apply. */
    function keyOf(rule: CompiledRule, session: Session, tx?: Transaction, to?: Address): string | undefined {
      let value: string | undefined;
      switch (rule.key) {
        case 'ip':
          value = clientNetwork(session.remote.address, 32, 128).replace(/\/\d+$/, '');
          break;
        case 'network':
          value = clientNetwork(session.remote.address, config.ipv4Prefix, config.ipv6Prefix);
          break;
        case 'user':
          value = session.user?.toLowerCase();
          break;
        case 'senderDomain':
          value = senderDomain(tx?.from.address ?? null);
          break;
        case 'recipient':
          value = to === undefined ? undefined : `${to.localPart}@${to.asciiDomain}`.toLowerCase();
          break;
      }
      return value === undefined ? undefined : `${rule.name}|${value}`;
    }

    /**
     * Take one token per applicable rule, in order; the first rule without
     * one refuses. Synchronous while the store answers synchronously.
     */
    function take(
      list: readonly CompiledRule[],
      session: Session,
      tx?: Transaction,
      to?: Address,
    ): MaybePromise<RateLimitResult | undefined> {
      if (list.length === 0 || exempt(session)) return undefined;
      const now = api.server.clock.now();
      let checked = false;
      const failed = (rule: CompiledRule, err: unknown): RateLimitResult => {
        session.log.warn({ err, rule: rule.name }, 'rate-limit store failed');
        return { result: 'temperror', reason: 'store failed', rule: rule.name };
      };
      const verdict = (rule: CompiledRule, taken: TakeResult): RateLimitResult | undefined =>
        taken.allowed
          ? undefined
          : {
              result: 'fail',
              reason: `over ${rule.name}`,
              rule: rule.name,
              retryAfterMs: taken.retryAfterMs,
            };
      const from = (i: number): MaybePromise<RateLimitResult | undefined> => {
        for (; i < list.length; i++) {
          const rule = list[i] as CompiledRule;
          const key = keyOf(rule, session, tx, to);
          if (key === undefined) continue;
          checked = true;
          let taken: MaybePromise<TakeResult>;
          try {
            taken = (store as PolicyStateStore).takeTokens(key, now, rule.bucket, 1);
          } catch (err) {
            return failed(rule, err);
          }
          if (taken instanceof Promise) {
            const next = i + 1;
            return taken.then(
              (t) => verdict(rule, t) ?? from(next),
              (err: unknown) => failed(rule, err),
            );
          }
          const refused = verdict(rule, taken);
          if (refused !== undefined) return refused;
        }
        return checked ? { result: 'pass' } : undefined;
      };
      return from(0);
    }

    /** Record the result and apply the action map (MAIL, RCPT). */
    const decideTx = (
      tx: Transaction,
      result: RateLimitResult | undefined,
      what: 'messages' | 'recipients',
    ) =>
      result === undefined
        ? undefined
        : report(tx, 'rate-limit', result, config.actions, messageReplies(what, result.retryAfterMs ?? 0));

    if (atConnect.length > 0)
      api.hooks.connect.tap(
        (session) =>
          andThen(take(atConnect, session), (result) => {
            if (result === undefined) return undefined;
            session.notes.rateLimit = result;
            if (result.result === 'pass') return undefined;
            const action = config.actions[result.result]?.action;
            if (action !== 'tempfail' && action !== 'reject') return undefined;
            session.log.info({ check: 'rate-limit', rule: result.rule }, 'policy refused');
            return CONNECT_REPLIES[action];
          }),
        { stage: Stage.FIRST },
      );

    if (atMail.length > 0)
      api.hooks.mail.tap(
        (tx) => andThen(take(atMail, tx.session, tx), (result) => decideTx(tx, result, 'messages')),
        { stage: Stage.EARLY },
      );

    if (atRcpt.length > 0)
      api.hooks.rcpt.tap(
        (tx, to) => {
          // `<Postmaster>` must always be reachable (RFC 5321 4.5.1).
          if (to.address.domain === '') return undefined;
          return andThen(take(atRcpt, tx.session, tx, to.address), (result) =>
            decideTx(tx, result, result?.rule?.includes(':messages') ? 'messages' : 'recipients'),
          );
        },
        { stage: Stage.EARLY },
      );
  },
});
