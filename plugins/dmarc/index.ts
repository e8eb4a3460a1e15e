/**
 * DMARC (RFC 7489) once the message has arrived: is the author domain (the
 * From header's) aligned with a domain SPF or DKIM authenticated? Reads the
 * `spf` and `dkim` results other checks recorded (see docs/policy.md), looks
 * the domain's policy up over the server's DNS resolver with `mailauth`, and
 * records check `dmarc`. A `fail` is handled by the domain's policy (`p`, or
 * `sp` for subdomains, sampled by `pct`: a message outside the sample gets the
 * next milder policy, RFC 7489 6.6.4) unless `actions` names that result.
 */

import { resolve } from 'node:path';
import { dmarc as checkDmarc } from 'mailauth/lib/dmarc/index.js';
import Type from 'typebox';
import { TtlCache } from '../../core/dns/cache.ts';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { type Reply, reply } from '../../core/reply.ts';
import type { Transaction } from '../../core/types.ts';
import { mailauthResolver } from '../policy/mailauth-resolver.ts';
import { cachedMessageHeader } from '../policy/message-header.ts';
import {
  actionsSchema,
  allResults,
  asResultValue,
  type CheckResult,
  decide,
  type PolicyChecks,
  recordResult,
  validateActions,
} from '../policy/policy.ts';
import { AggregateRecorder } from './aggregate.ts';
import { authorDomains, fromFieldsOf, readFromFields } from './header-from.ts';

export type DmarcPolicy = 'none' | 'quarantine' | 'reject';

/** What `dmarc` records. */
export interface DmarcResult extends CheckResult {
  /** The author domain (RFC5322.From). */
  readonly domain: string;
  /** The published policy that applies (`p`, or `sp` for a subdomain). */
  readonly policy?: DmarcPolicy;
  /** `pct` of the record (100 when absent). */
  readonly pct?: number;
  /** What was done about a `fail`: the policy after `pct` sampling. */
  readonly applied?: DmarcPolicy;
  /** The aligned SPF and DKIM domains, if any: aggregate-report data. */
  readonly alignment?: { readonly spf?: string; readonly dkim?: string };
  /** The DMARC record used. */
  readonly record?: string;
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    dmarc: DmarcResult;
  }
}

export const schema = Type.Object(
  {
    actions: actionsSchema('DMARC', {}),
    honorPolicy: Type.Boolean({
      default: true,
      description:
        'For a `fail` that `actions` does not name, do what the domain publishes: `p=reject` refuses (550 5.7.26), `p=quarantine` quarantines, `p=none` accepts.',
    }),
    cacheTtl: Type.Integer({
      minimum: 0,
      default: 60,
      description:
        'Seconds an evaluation is reused for the same author domain and the same SPF- and DKIM-authenticated domains (never longer than the DNS records it read live; `temperror` is not kept; `pct` is still sampled per message). 0: no cache.',
    }),
    cacheSize: Type.Integer({
      minimum: 1,
      default: 10000,
      description: 'Evaluations kept at most (least recently used dropped first).',
    }),
    aggregateData: Type.Boolean({
      default: true,
      description:
        'Record aggregate-report data (RFC 7489 7.2): per UTC day, messages counted by author domain, source IP, disposition and aligned DKIM/SPF results, in `<dataDir>/dmarc/<YYYY-MM-DD>.json`. Sending reports is not done yet.',
    }),
    aggregateFlushSeconds: Type.Integer({
      minimum: 1,
      default: 300,
      description: 'Seconds between writes of the aggregate data (and once at shutdown).',
    }),
    multipleAuthors: Type.Union([Type.Literal('strictest'), Type.Literal('none')], {
      default: 'strictest',
      description:
        'A From naming several author domains (one field with several mailboxes, or several From fields): `strictest` checks each domain and applies the strictest policy among those that fail (RFC 7489 6.6.1; one `dmarc` result per domain); `none` records `none` and applies nothing (DMARCbis leaves such messages out of DMARC, and a forger can use that to slip a protected domain past it).',
    }),
    maxAuthorDomains: Type.Integer({
      minimum: 2,
      default: 5,
      description:
        'With `multipleAuthors: "strictest"`, author domains checked at most (each can cost several DNS queries); a message naming more gets one `permerror` (`actions` decides what to do with it).',
    }),
    maxHeaderSize: Type.Integer({
      minimum: 1024,
      default: 65536,
      description: 'Octets of the header section read to find the From field.',
    }),
  },
  { additionalProperties: false },
);

const REJECT = reply(550, '5.7.26', 'Message refused: DMARC policy of the author domain');
const TEMPFAIL = reply(451, '4.7.26', 'DMARC check could not complete, try again later');

function pctOf(record: string | undefined): number {
  const m = /(?:^|;)\s*pct\s*=\s*(\d{1,3})\s*(?:;|$)/i.exec(record ?? '');
  const n = m?.[1] === undefined ? 100 : Number(m[1]);
  return Math.min(100, n);
}

function milder(p: DmarcPolicy): DmarcPolicy {
  return p === 'reject' ? 'quarantine' : 'none';
}

/** How a result ranks when several author domains were checked: the first that applies decides. */
const OUTCOME_RANK: Readonly<Record<string, number>> = {
  fail: 0,
  temperror: 1,
  permerror: 2,
  none: 3,
  pass: 4,
};
const POLICY_RANK: Readonly<Record<DmarcPolicy, number>> = { reject: 0, quarantine: 1, none: 2 };

/**
 * The result that decides for a message: a `fail` whose applied policy is the
 * strictest, else a `temperror`, a `permerror`, a `none`, a `pass`, in that
 * order (one domain not passing is enough to keep the message from passing).
 */
function strictest(results: readonly DmarcResult[]): DmarcResult {
  let best = results[0] as DmarcResult;
  for (let k = 1; k < results.length; k++) {
    const r = results[k] as DmarcResult;
    const a = OUTCOME_RANK[r.result] ?? 5;
    const b = OUTCOME_RANK[best.result] ?? 5;
    if (a < b) best = r;
    else if (a === b && a === 0 && POLICY_RANK[r.applied ?? 'none'] < POLICY_RANK[best.applied ?? 'none'])
      best = r;
  }
  return best;
}

function asPolicy(p: string | undefined): DmarcPolicy | undefined {
  return p === 'none' || p === 'quarantine' || p === 'reject' ? p : undefined;
}

export default definePlugin({
  name: 'dmarc',
  description:
    'DMARC (RFC 7489) after the message: alignment of From with SPF and DKIM results; the domain’s policy.',
  schema,
  register(api, config) {
    validateActions('dmarc', config.actions);
    const clock = api.server.clock;
    type Evaluation = Awaited<ReturnType<typeof checkDmarc>>;
    const cache = new TtlCache<Evaluation>(config.cacheTtl > 0 ? config.cacheSize : 0);

    type Input = Parameters<typeof checkDmarc>[0];
    /** What an evaluation depends on, as a cache key. */
    const keyOf = (input: Input) =>
      JSON.stringify([input.headerFrom, input.fromFields, input.spfDomains, input.dkimDomains]);

    /** The evaluation made for the same inputs while its DNS records live, if any. */
    function cached(key: string): Evaluation | undefined {
      return cache.get(key, clock.now())?.value;
    }

    /** mailauth's evaluation (kept for `cacheTtl`, or less if its DNS records live less). */
    async function evaluate(input: Input, key: string): Promise<Evaluation> {
      let ttl = config.cacheTtl;
      const found = await checkDmarc({
        ...input,
        resolver: mailauthResolver(api.server.dns, (t) => {
          ttl = Math.min(ttl, t);
        }),
      });
      if (ttl > 0 && (found === false || found.status.result !== 'temperror'))
        cache.set(key, found, clock.now() + ttl * 1000);
      return found;
    }

    function authenticated(tx: Transaction) {
      const spfDomains: string[] = [];
      const dkimDomains: { domain: string }[] = [];
      // DKIM results come from whichever plugin records check `dkim`; RFC 8601's `header.d` names the signer.
      for (const r of allResults(tx)) {
        if (r.result.result !== 'pass') continue;
        if (r.check === 'spf') spfDomains.push((r.result as PolicyChecks['spf']).domain);
        else if (r.check === 'dkim') {
          const d = r.result.properties?.['header.d'];
          if (d !== undefined) dkimDomains.push({ domain: d.toLowerCase() });
        }
      }
      return { spfDomains, dkimDomains };
    }

    // Aggregate-report data: counted per message, written now and then and at shutdown.
    const aggregate = config.aggregateData
      ? new AggregateRecorder(resolve(api.server.dataDir, 'dmarc'))
      : undefined;
    if (aggregate !== undefined) {
      const write = () =>
        aggregate.flush().catch((err: unknown) => api.log.error({ err }, 'DMARC aggregate data not written'));
      const timer = setInterval(write, config.aggregateFlushSeconds * 1000);
      timer.unref();
      api.onClose(async () => {
        clearInterval(timer);
        await write();
      });
    }

    function enforce(tx: Transaction, result: DmarcResult): Reply | undefined {
      if (config.actions[result.result] !== undefined)
        return decide(tx, 'dmarc', result.result, config.actions, { reject: REJECT, tempfail: TEMPFAIL });
      if (result.result !== 'fail' || !config.honorPolicy || result.applied === undefined) return undefined;
      if (result.applied === 'reject') return REJECT;
      if (result.applied === 'quarantine')
        return decide(tx, 'dmarc', 'fail', { fail: { action: 'quarantine' } });
      return undefined;
    }

    /** What the evaluation says for `domains` (`false`: no single author domain), with `pct` sampled. */
    function resultOf(domains: readonly string[], found: Evaluation): DmarcResult {
      // No usable author domain (none, or several): DMARC cannot say (RFC 7489 6.6.1).
      if (found === false)
        return { result: 'none', domain: domains.join(','), reason: 'no single author domain' };
      const policy = asPolicy(found.policy);
      const pct = pctOf(found.rr);
      const value = asResultValue(found.status.result) ?? 'temperror';
      let applied: DmarcPolicy | undefined;
      if (value === 'fail' && policy !== undefined)
        applied = pct >= 100 || api.server.random() * 100 < pct ? policy : milder(policy);
      const spf = found.alignment?.spf?.result;
      const dkim = found.alignment?.dkim?.result;
      const domain = domains[0] ?? found.domain;
      // Built by assignment, not conditional spreads: this runs for every message.
      const properties: Record<string, string> = { 'header.from': domain };
      const result: { -readonly [K in keyof DmarcResult]: DmarcResult[K] } = {
        result: value,
        domain,
        properties,
      };
      if (policy !== undefined) {
        properties['policy.dmarc'] = policy;
        result.policy = policy;
        result.pct = pct;
      }
      if (applied !== undefined) result.applied = applied;
      if (spf || dkim) {
        const alignment: { spf?: string; dkim?: string } = {};
        if (spf) alignment.spf = spf;
        if (dkim) alignment.dkim = dkim;
        result.alignment = alignment;
      }
      if (found.rr !== undefined) result.record = found.rr;
      return result;
    }

    /**
     * Record the results (one per author domain) and act on the one that
     * decides: the strictest (`strictest`).
     */
    function conclude(tx: Transaction, results: readonly DmarcResult[]): Reply | undefined {
      for (const result of results) recordResult(tx, 'dmarc', result);
      const decisive = strictest(results);
      // Guarded: the transaction's child logger is made on first use, and most transactions need none.
      if (api.log.isLevelEnabled('debug'))
        tx.log.debug(
          {
            dmarc: decisive.result,
            domain: decisive.domain,
            applied: decisive.applied,
            authors: results.length,
          },
          'dmarc',
        );
      const verdict = enforce(tx, decisive);
      // A tempfail is no disposition (the message comes back); a result without a policy has nobody to report to.
      if (aggregate !== undefined && (verdict?.code ?? 500) >= 500) {
        const disposition =
          verdict !== undefined
            ? 'reject'
            : tx.notes.policy?.quarantine?.check === 'dmarc'
              ? 'quarantine'
              : 'none';
        for (const result of results) {
          if (result.policy === undefined) continue;
          aggregate.add(api.server.clock.now(), {
            headerFrom: result.domain,
            // IPv4 clients on dual-stack sockets, and behind PROXY or XCLIENT, come as IPv4 from the core.
            sourceIp: tx.session.remote.address,
            disposition,
            dkim: result.alignment?.dkim === undefined ? 'fail' : 'pass',
            spf: result.alignment?.spf === undefined ? 'fail' : 'pass',
            policy: result.policy,
          });
        }
      }
      return verdict;
    }

    /** The evaluation for `input`: from the cache at once, else a promise of it. */
    function evaluation(input: Input): Evaluation | Promise<Evaluation> {
      const key = keyOf(input);
      return cached(key) ?? evaluate(input, key);
    }

    /** DMARC on the From fields' values: at once when the evaluations are cached, else after them. */
    function check(
      tx: Transaction,
      fields: readonly string[],
    ): Reply | undefined | Promise<Reply | undefined> {
      const domains = [...new Set(fields.flatMap(authorDomains))];
      const auth = authenticated(tx);
      const several = domains.length > 1 || (domains.length === 1 && fields.length > 1);
      if (!several || config.multipleAuthors === 'none') {
        const found = evaluation({ headerFrom: domains, fromFields: fields.length, ...auth });
        return found instanceof Promise
          ? found.then((f) => conclude(tx, [resultOf(domains, f)]))
          : conclude(tx, [resultOf(domains, found)]);
      }
      // Several author domains (RFC 7489 6.6.1): each is checked as the author domain, the strictest failure applies.
      if (domains.length > config.maxAuthorDomains)
        return conclude(tx, [
          {
            result: 'permerror',
            domain: domains.join(','),
            reason: `more than ${config.maxAuthorDomains} author domains`,
          },
        ]);
      const found = domains.map((d) => evaluation({ headerFrom: [d], fromFields: 1, ...auth }));
      const results = (all: readonly Evaluation[]) => all.map((f, i) => resultOf([domains[i] as string], f));
      return found.some((f) => f instanceof Promise)
        ? Promise.all(found).then((all) => conclude(tx, results(all)))
        : conclude(tx, results(found as Evaluation[]));
    }

    api.hooks.message.tap(
      (tx, message) => {
        if (tx.session.user !== undefined) return undefined;
        // Usually dkim-verify parsed the header already and the evaluation is cached: no promise, no wait.
        const header = cachedMessageHeader(tx, message);
        if (header !== undefined && header.text.length <= config.maxHeaderSize)
          return check(tx, fromFieldsOf(header));
        return readFromFields(tx, message, config.maxHeaderSize).then((fields) => check(tx, fields));
      },
      // After the checks whose results it reads (dkim-verify records at `EARLY`, spf at MAIL FROM).
      { stage: Stage.LATE },
    );
  },
});
