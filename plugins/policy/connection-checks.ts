/**
 * Checks about the connection rather than the message: the client's address
 * (DNSBL, DNSWL, forward-confirmed reverse DNS) or what it said in EHLO (HELO
 * checks). Their DNS lookups start as soon as the subject is known (at
 * connect, or at EHLO) and run while the client talks; the results are
 * recorded on every transaction of the session at MAIL, so later checks
 * (greylisting, a scanner) and Authentication-Results read them like any other
 * (`resultsOf(tx, check)`), and policy decides at the configured point:
 *
 *   connect  refuse the connection (a 5xx becomes the 554 greeting); EHLO-triggered checks cannot
 *   ehlo     refuse EHLO/HELO (550); only EHLO-triggered checks
 *   mail     refuse MAIL FROM
 *   rcpt     refuse each RCPT TO (the default of the DNS lists: the envelope is logged, and
 *            mail to postmaster can still be let through, RFC 5321 4.5.1)
 *
 * Results are kept per session (keyed by the address, or by the EHLO name),
 * not in `session.notes`: a STARTTLS renews the notes but not the client's
 * address, and the results are put back into the notes at the next MAIL.
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import type { PluginApi } from '../../core/plugin.ts';
import { isPermanent, isTransient, type Reply } from '../../core/reply.ts';
import type { ForwardPath, Session, Transaction } from '../../core/types.ts';
import { type ActionMap, type DefaultReplies, decide } from './actions.ts';
import { type CheckName, type CheckResult, type PolicyChecks, recordResult } from './policy.ts';

/** Where a connection check's refusal is given. */
export type DecisionPoint = 'connect' | 'ehlo' | 'mail' | 'rcpt';

/** The `at` setting of a connection check. */
export function decisionPointSchema(allowed: readonly DecisionPoint[], fallback: DecisionPoint, why: string) {
  return Type.Union(
    allowed.map((p) => Type.Literal(p)),
    {
      default: fallback,
      description: `Where a refusal is given: ${allowed.map((p) => `\`${p}\``).join(', ')}. ${why}`,
    },
  );
}

export interface ConnectionCheckOptions<K extends CheckName> {
  readonly check: K;
  /** When the lookups start: when the client connects (its address), or at EHLO (its name). */
  readonly trigger: 'connect' | 'ehlo';
  readonly at: DecisionPoint;
  readonly actions: ActionMap;
  /** The action map for one result, when it depends on the result (one map per HELO test). Default `actions`. */
  actionsFor?(result: PolicyChecks[K]): ActionMap;
  /** Neither refuse nor record for sessions that authenticated (decided at MAIL or later). */
  readonly skipAuthenticated: boolean;
  /** At `rcpt`: never refuse mail to postmaster (any domain, or `<Postmaster>`). */
  readonly allowPostmaster?: boolean;
  /** The results for this subject (`helo`: the EHLO name, for EHLO-triggered checks). Never rejects. */
  evaluate(session: Session, helo: string | undefined): Promise<readonly PolicyChecks[K][]>;
  /** The reply `reject`/`tempfail` give for one result when the action names none. */
  replies?(session: Session, result: PolicyChecks[K]): DefaultReplies | undefined;
  /** `false`: record, but neither refuse nor quarantine (a DNSWL listing exempts the client from DNSBL). */
  mayRefuse?(session: Session): Promise<boolean>;
  /** Once the results are in, each time they are recorded on a transaction (to put them in notes). */
  settled?(session: Session, results: readonly PolicyChecks[K][]): void;
}

export interface ConnectionCheck<K extends CheckName> {
  /** The session's results (starting the lookups if they have not started). */
  results(session: Session): Promise<readonly PolicyChecks[K][]>;
}

interface Entry<R> {
  readonly key: string;
  readonly results: Promise<readonly R[]>;
  /** The results, once they are in. */
  value?: readonly R[];
}

/** The subject a check's results belong to: the client's address (and the EHLO name for EHLO checks). */
function subjectOf(session: Session, trigger: 'connect' | 'ehlo', helo: string | undefined): string {
  return trigger === 'ehlo' ? `${session.remote.address} ${helo ?? ''}` : session.remote.address;
}

function isPostmaster(to: ForwardPath): boolean {
  return to.address.localPart.toLowerCase() === 'postmaster';
}

/** The refusal policy gives for a set of results: the first permanent one, else the first temporary one. */
function verdict<R extends CheckResult>(
  tx: Transaction | undefined,
  session: Session,
  check: string,
  results: readonly R[],
  actions: (result: R) => ActionMap,
  replies: ((session: Session, result: R) => DefaultReplies | undefined) | undefined,
): { reply: Reply; result: R } | undefined {
  let temporary: { reply: Reply; result: R } | undefined;
  for (const result of results) {
    const reply = decide(tx, check, result.result, actions(result), replies?.(session, result));
    if (reply === undefined) continue;
    if (isPermanent(reply)) return { reply, result };
    if (isTransient(reply)) temporary ??= { reply, result };
  }
  return temporary;
}

/**
 * Wire a connection check into the hooks: start, record at MAIL, decide at
 * `at`. Taps at `Stage.EARLY`: before the checks about the message (SPF) and
 * before anything accepts a recipient.
 */
export function connectionCheck<K extends CheckName>(
  api: PluginApi<unknown>,
  opts: ConnectionCheckOptions<K>,
): ConnectionCheck<K> {
  type R = PolicyChecks[K];
  const sessions = new WeakMap<Session, Entry<R>>();
  const { check, trigger, at } = opts;
  if (trigger === 'ehlo' && at === 'connect')
    throw new Error(`${check}: a check of the EHLO name cannot decide at connect`);
  if (trigger === 'connect' && at === 'ehlo')
    throw new Error(`${check}: a check of the client address decides at connect, mail or rcpt`);

  /**
   * The session's results for this subject, starting the lookups if needed:
   * the results themselves once they are in, so that the taps on MAIL and
   * RCPT answer synchronously (no promise and no timer per call).
   */
  function start(session: Session, helo: string | undefined): readonly R[] | Promise<readonly R[]> {
    const key = subjectOf(session, trigger, helo);
    const known = sessions.get(session);
    if (known?.key === key) return known.value ?? known.results;
    const entry: Entry<R> = {
      key,
      results: opts.evaluate(session, helo).then(
        (value) => {
          entry.value = value;
          return value;
        },
        (err: unknown) => {
          session.log.warn({ err, check }, 'connection check failed');
          entry.value = [];
          return [];
        },
      ),
    };
    sessions.set(session, entry);
    return entry.results;
  }

  /** `then` for a value that may already be there: synchronous when it is. */
  function next<T, U>(value: T | Promise<T>, fn: (v: T) => U | Promise<U>): U | Promise<U> {
    return value instanceof Promise ? value.then(fn) : fn(value);
  }

  const actionsOf = (r: R): ActionMap => opts.actionsFor?.(r) ?? opts.actions;

  /**
   * What policy does with the results: a refusal (or `undefined`), and a
   * `quarantine` marked on `tx`. With `mayRefuse` (an allow list) neither
   * happens for a client it exempts; it is only asked when there is
   * something to exempt from, so the common case stays synchronous.
   */
  function refusal(
    session: Session,
    tx: Transaction | undefined,
    results: readonly R[],
  ): Reply | undefined | Promise<Reply | undefined> {
    const judge = (on: Transaction | undefined) =>
      verdict(on, session, check, results as readonly (R & CheckResult)[], actionsOf, opts.replies);
    // Without side effects first: is there anything to do at all?
    const refuses = judge(undefined);
    const quarantines =
      tx !== undefined &&
      results.some((r) => actionsOf(r)[(r as R & CheckResult).result]?.action === 'quarantine');
    if (refuses === undefined && !quarantines) return undefined;
    const log = (tx ?? session).log;
    const apply = () => {
      const found = judge(tx);
      if (found === undefined) return undefined;
      log.info(
        {
          check,
          result: found.result.result,
          reason: found.result.reason,
          properties: found.result.properties,
        },
        'policy refused',
      );
      return found.reply;
    };
    if (opts.mayRefuse === undefined) return apply();
    return opts.mayRefuse(session).then((may) => {
      if (may) return apply();
      log.info(
        { check, result: (refuses?.result ?? results[0])?.result },
        refuses ? 'policy refusal waived (allow-listed)' : 'policy quarantine waived (allow-listed)',
      );
      return undefined;
    });
  }

  const skipped = (session: Session) => opts.skipAuthenticated && session.user !== undefined;

  if (trigger === 'connect') {
    api.hooks.connect.tap(
      (session) => {
        const results = start(session, undefined);
        return at === 'connect' ? next(results, (r) => refusal(session, undefined, r)) : undefined;
      },
      { stage: Stage.EARLY },
    );
  } else {
    api.hooks.ehlo.tap(
      (session, helo) => {
        const results = start(session, helo.domain);
        return at === 'ehlo' ? next(results, (r) => refusal(session, undefined, r)) : undefined;
      },
      { stage: Stage.EARLY },
    );
  }

  api.hooks.mail.tap(
    (tx) => {
      const session = tx.session;
      if (skipped(session)) return undefined;
      return next(start(session, session.helo?.domain), (results) => {
        for (const r of results) recordResult(tx, check, r as R & CheckResult);
        opts.settled?.(session, results);
        // Decided at connect or EHLO already; again here so that `quarantine` marks the transaction.
        return at === 'rcpt' ? undefined : refusal(session, tx, results);
      });
    },
    { stage: Stage.EARLY },
  );

  if (at === 'rcpt') {
    api.hooks.rcpt.tap(
      (tx, to) => {
        const session = tx.session;
        if (skipped(session)) return undefined;
        if (opts.allowPostmaster && isPostmaster(to)) return undefined;
        return next(start(session, session.helo?.domain), (results) => refusal(session, tx, results));
      },
      { stage: Stage.EARLY },
    );
  }

  return { results: async (session) => start(session, session.helo?.domain) };
}
