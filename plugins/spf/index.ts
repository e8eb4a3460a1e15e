/**
 * SPF (RFC 7208): is the client allowed to send for the MAIL FROM domain (or,
 * for the null sender, for its HELO name)? Checked at MAIL FROM with
 * `mailauth` over the server's DNS resolver; the result is recorded on the
 * transaction (check `spf`, see docs/policy.md) for DMARC and the
 * Authentication-Results header, and the `actions` map decides: by default
 * every result is accepted, `{ "fail": { "action": "reject" } }` refuses
 * `fail` early with 550 5.7.23 (RFC 7372).
 *
 * Without an early refusal in the action map, the check starts at MAIL FROM
 * but does not hold the reply: it runs while the client sends RCPT and the
 * data, and its result is recorded (and acted on) at the start of the
 * `message` hook, before DKIM and DMARC. Results are kept for a short while
 * (`cacheTtl`), per client address, sender and HELO name: the inputs of the
 * evaluation, so a cached result is the one a new evaluation would give.
 */
import { spf as checkSpf } from 'mailauth/lib/spf/index.js';
import Type from 'typebox';
import { TtlCache } from '../../core/dns/cache.ts';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Transaction } from '../../core/types.ts';
import { mailauthResolver } from '../policy/mailauth-resolver.ts';
import {
  actionsSchema,
  asResultValue,
  type CheckResult,
  type DefaultReplies,
  decide,
  report,
  reserveResult,
  validateActions,
} from '../policy/policy.ts';

/** What `spf` records: the RFC 8601 result plus what it checked. */
export interface SpfResult extends CheckResult {
  /** The identity checked: the MAIL FROM address, or the HELO name for the null sender (RFC 7208 2.3, 2.4). */
  readonly identity: 'mailfrom' | 'helo';
  /** The domain whose SPF record was evaluated (DMARC aligns on it). */
  readonly domain: string;
  /** The record used, when one was found. */
  readonly record?: string;
  /** The domain's `exp=` explanation for a `fail` (third-party text: never sent as is). */
  readonly explanation?: string;
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    spf: SpfResult;
  }
}

export const schema = Type.Object(
  {
    actions: actionsSchema('SPF', {}),
    skipAuthenticated: Type.Boolean({
      default: true,
      description: 'Do not check sessions that authenticated (AUTH): submission is not SPF’s business.',
    }),
    maxLookups: Type.Integer({
      minimum: 1,
      default: 10,
      description: 'DNS-querying terms a check may use before it is `permerror` (RFC 7208 4.6.4: 10).',
    }),
    maxVoidLookups: Type.Integer({
      minimum: 0,
      default: 2,
      description:
        'Lookups answering no records a check may have before it is `permerror` (RFC 7208 4.6.4: 2).',
    }),
    strict: Type.Boolean({
      default: true,
      description:
        'Follow RFC 7208 exactly (mailauth’s strict mode): a syntax error anywhere in a record is `permerror` before any term is evaluated (4.6), every lookup answering no records counts as void (4.6.4), target names must be valid (4.8, 7.3). `false`: mailauth’s lenient mode, which evaluates a record up to the term that matches and accepts some records that are malformed in the wild.',
    }),
    timeout: Type.Integer({
      minimum: 1,
      default: 20000,
      description:
        'Milliseconds one check may take before it is `temperror` (RFC 7208 4.6.4: at least 20 s). Keep the plugin’s tap `timeout` above it.',
    }),
    waitAtMail: Type.Boolean({
      default: false,
      description:
        'Hold the MAIL FROM reply until the check is done and record the result there. Otherwise the check runs in the background and is recorded at the start of the `message` hook, unless `actions` refuses some result (`reject` or `tempfail`): then MAIL FROM waits, to refuse early.',
    }),
    cacheTtl: Type.Integer({
      minimum: 0,
      default: 60,
      description:
        'Seconds a result is reused for the same client address, sender and HELO name (never longer than the DNS records it came from live; `temperror` is not kept). 0: no cache.',
    }),
    cacheSize: Type.Integer({
      minimum: 1,
      default: 10000,
      description: 'Results kept at most (least recently used dropped first).',
    }),
  },
  { additionalProperties: false },
);

/** RFC 7372: X.7.23 "SPF validation failed", X.7.24 "SPF validation error". */
const FAIL_REPLIES: DefaultReplies = {
  reject: reply(550, '5.7.23', 'SPF validation failed'),
  tempfail: reply(451, '4.7.23', 'SPF validation failed, try again later'),
};
const ERROR_REPLIES: DefaultReplies = {
  reject: reply(550, '5.7.24', 'SPF validation error'),
  tempfail: reply(451, '4.7.24', 'SPF validation error, try again later'),
};

/** The inputs of an evaluation (the cache key is made of those the macros read). */
interface Inputs {
  readonly key: string;
  readonly ip: string;
  readonly checked: string;
  readonly domain: string;
  readonly identity: 'mailfrom' | 'helo';
  readonly property: Readonly<Record<string, string>>;
  readonly sender: Transaction['from']['address'];
  readonly helo: string | undefined;
}

/** A check started at MAIL FROM, recorded at the message. */
interface Pending {
  /** The evaluation under way (undefined: the result was known at once). */
  readonly started: Promise<SpfResult> | undefined;
  readonly record: (r: SpfResult) => void;
  /** Set once the check is done: the message tap then answers without a promise. */
  done?: SpfResult;
}

export default definePlugin({
  name: 'spf',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'SPF (RFC 7208) at MAIL FROM: records pass/fail/... for DMARC and Authentication-Results.',
  schema,
  register(api, config) {
    validateActions('spf', config.actions);
    const dns = api.server.dns;
    const clock = api.server.clock;
    const cache = new TtlCache<SpfResult>(config.cacheTtl > 0 ? config.cacheSize : 0);
    /** Checks started at MAIL FROM and not yet recorded (deferred mode). */
    const pending = new WeakMap<Transaction, Pending>();
    // An action that refuses must refuse at MAIL FROM: the check has to finish there.
    const refusesEarly = Object.values(config.actions).some(
      (a) => a.action === 'reject' || a.action === 'tempfail',
    );
    const waitAtMail = config.waitAtMail || refusesEarly;

    /**
     * The result without a DNS lookup, when there is one: no domain to check, or
     * a result cached for the same inputs. Else the inputs of the evaluation.
     */
    function known(tx: Transaction): SpfResult | Inputs {
      const session = tx.session;
      const sender = tx.from.address;
      const helo = session.helo?.domain;
      const identity = sender === null ? 'helo' : 'mailfrom';
      const checked = sender === null ? (helo ?? '') : `${sender.localPart}@${sender.asciiDomain}`;
      const domain = sender === null ? (helo ?? '') : sender.asciiDomain;
      const property = identity === 'helo' ? { 'smtp.helo': checked } : { 'smtp.mailfrom': checked };
      // A HELO address literal (or no HELO) names no domain to check (RFC 7208 2.3).
      if (
        domain === '' ||
        domain.startsWith('[') ||
        sender?.domainKind === 'ipv4' ||
        sender?.domainKind === 'ipv6'
      )
        return { result: 'none', identity, domain, properties: property, reason: 'no domain to check' };
      // An IPv4 client on a dual-stack socket, or behind PROXY or XCLIENT, comes as IPv4 from the core.
      const ip = session.remote.address;
      // Every input of the evaluation (the macros read sender, client address and HELO name).
      const key = `${ip} ${checked} ${helo ?? ''}`;
      const hit = cache.get(key, clock.now());
      if (hit) return hit.value;
      return { key, ip, checked, domain, identity, property, sender, helo };
    }

    /** Evaluate with mailauth (the cache missed); keep the result as long as its records live. */
    async function evaluate(tx: Transaction, inputs: Inputs): Promise<SpfResult> {
      const { key, ip, checked, domain, identity, property, sender, helo } = inputs;
      const session = tx.session;
      let ttl = config.cacheTtl;
      const found = await checkSpf({
        ...(sender === null ? { sender: `postmaster@${domain}` } : { sender: checked }),
        ip,
        ...(helo === undefined ? {} : { helo }),
        mta: session.hostname,
        resolver: mailauthResolver(dns, (t) => {
          ttl = Math.min(ttl, t);
        }),
        maxResolveCount: config.maxLookups,
        maxVoidCount: config.maxVoidLookups,
        maxElapsedTime: config.timeout,
        strict: config.strict,
      });
      const out: SpfResult = {
        result: asResultValue(found.status.result) ?? 'temperror',
        identity,
        domain,
        properties: property,
        ...(typeof found.status.comment === 'string' ? { reason: found.status.comment } : {}),
        ...(found.rr === undefined ? {} : { record: found.rr }),
        ...(found.explanation === undefined ? {} : { explanation: found.explanation }),
      };
      if (ttl > 0 && out.result !== 'temperror') cache.set(key, out, clock.now() + ttl * 1000);
      return out;
    }

    /** The check itself threw (not a DNS answer: mailauth turns those into results): a temperror for the identity checked. */
    function failed(tx: Transaction, inputs: Inputs, err: unknown): SpfResult {
      tx.log.warn({ err }, 'SPF check failed');
      const { identity, domain, property } = inputs;
      return { result: 'temperror', identity, domain, properties: property, reason: 'check failed' };
    }

    function decideOn(tx: Transaction, result: SpfResult, record?: (r: SpfResult) => void) {
      // Guarded: the transaction's child logger is made on first use, and most transactions need none.
      if (api.log.isLevelEnabled('debug'))
        tx.log.debug({ spf: result.result, domain: result.domain, identity: result.identity }, 'spf');
      const replies = result.result === 'fail' || result.result === 'softfail' ? FAIL_REPLIES : ERROR_REPLIES;
      if (record === undefined) return report(tx, 'spf', result, config.actions, replies);
      record(result);
      const verdict = decide(tx, 'spf', result.result, config.actions, replies);
      if (verdict !== undefined)
        tx.log.info({ check: 'spf', result: result.result, reason: result.reason }, 'policy refused');
      return verdict;
    }

    api.hooks.mail.tap(
      (tx) => {
        if (config.skipAuthenticated && tx.session.user !== undefined) return undefined;
        const now = known(tx);
        if (waitAtMail) {
          if (!('key' in now)) return decideOn(tx, now);
          return evaluate(tx, now)
            .catch((err: unknown) => failed(tx, now, err))
            .then((result) => decideOn(tx, result));
        }
        // Its result goes where SPF started, before those of checks that start later.
        const record = reserveResult(tx, 'spf');
        // A cached result: nothing to wait for, no promise.
        if (!('key' in now)) {
          pending.set(tx, { started: undefined, record, done: now });
          return undefined;
        }
        // Started now, recorded at `message`: the MAIL FROM reply does not wait for DNS.
        const started = evaluate(tx, now).catch((err: unknown) => failed(tx, now, err));
        const check: Pending = { started, record };
        started.then((r) => {
          check.done = r;
        });
        pending.set(tx, check);
        return undefined;
      },
      // After cheap local checks, before plugins that answer MAIL for good.
      { stage: Stage.NORMAL },
    );

    if (waitAtMail) return;
    // Before every check that reads SPF's result (DMARC) and before DKIM: the result is usually in by now.
    api.hooks.message.tap(
      (tx) => {
        const check = pending.get(tx);
        if (check === undefined) return undefined;
        pending.delete(tx);
        // Usually done long before the data ends: no promise, no wait.
        if (check.done !== undefined) return decideOn(tx, check.done, check.record);
        if (check.started === undefined) return undefined; // not reached: a check without a promise is done
        return check.started.then((result) => decideOn(tx, result, check.record));
      },
      { stage: Stage.FIRST },
    );
  },
});
