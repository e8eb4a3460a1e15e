/**
 * Policy decides: a configured action per check result turns what a check
 * reported into a reply (or none). Every check plugin takes the same
 * `actions` setting (built with `actionsSchema`) and calls `decide`, so no
 * check reimplements the mapping.
 *
 *   accept      no objection (the result is still recorded and shown in the header)
 *   tag         the same, named for results worth a look: the header carries them
 *   quarantine  accept, and mark the message (`tx.attributes.quarantine`) for delivery to file apart
 *   tempfail    refuse for now: 451 4.7.x (the client retries)
 *   reject      refuse: 550 5.7.x
 */
import Type, { type Static } from 'typebox';
import { type Reply, reply } from '../../core/reply.ts';
import type { Transaction } from '../../core/types.ts';
import {
  type CheckName,
  type CheckResult,
  type PolicyChecks,
  policyNotes,
  type ResultValue,
  recordResult,
} from './policy.ts';

const ACTION_NAMES = ['accept', 'tag', 'quarantine', 'tempfail', 'reject'] as const;
export type ActionName = (typeof ACTION_NAMES)[number];

/** One action: what to do, and for `reject`/`tempfail` optionally the reply. */
export const ActionSchema = Type.Object(
  {
    action: Type.Union(
      [
        Type.Literal('accept'),
        Type.Literal('tag'),
        Type.Literal('quarantine'),
        Type.Literal('tempfail'),
        Type.Literal('reject'),
      ],
      { description: 'What to do: `accept`, `tag`, `quarantine`, `tempfail` or `reject`.' },
    ),
    code: Type.Optional(
      Type.Integer({
        minimum: 400,
        maximum: 599,
        description: 'Reply code for `reject` (5xx) or `tempfail` (4xx). Default 550 / 451.',
      }),
    ),
    enhanced: Type.Optional(
      Type.String({
        pattern: '^[45]\\.\\d{1,3}\\.\\d{1,3}$',
        description:
          'RFC 3463 enhanced status code; its class must match the code. Default: the check’s own.',
      }),
    ),
    text: Type.Optional(Type.String({ minLength: 1, description: 'Reply text. Default: the check’s own.' })),
  },
  { additionalProperties: false },
);
export type Action = Static<typeof ActionSchema>;

/** Per result value, the action (results not listed are accepted). */
export type ActionMap = Partial<Record<ResultValue, Action>>;

/** The `actions` setting of a check plugin, with that check's defaults. */
export function actionsSchema(check: string, defaults: ActionMap) {
  const one = (value: ResultValue) =>
    Type.Optional({ ...ActionSchema, description: `Action when ${check} gives \`${value}\`.` });
  return Type.Object(
    {
      pass: one('pass'),
      fail: one('fail'),
      softfail: one('softfail'),
      neutral: one('neutral'),
      none: one('none'),
      temperror: one('temperror'),
      permerror: one('permerror'),
    },
    {
      additionalProperties: false,
      default: defaults,
      description: `What to do with each ${check} result: \`{ "fail": { "action": "reject" } }\`. Results not listed are accepted (and still recorded for later checks and the log).`,
    },
  );
}

/** The reply a check gives for `reject`/`tempfail` when the action names none. */
export interface DefaultReplies {
  readonly reject: Reply;
  readonly tempfail: Reply;
}

/** 550 5.7.1 / 451 4.7.1: "delivery not authorized" (RFC 3463). Checks pass more precise ones (RFC 7372). */
const GENERIC_REPLIES: DefaultReplies = {
  reject: reply(550, '5.7.1', 'Message refused by policy'),
  tempfail: reply(451, '4.7.1', 'Policy check could not complete, try again later'),
};

function configured(action: Action, fallback: Reply): Reply {
  if (action.code === undefined && action.enhanced === undefined && action.text === undefined)
    return fallback;
  const code = action.code ?? fallback.code;
  const cls = String(code)[0];
  let enhanced = action.enhanced ?? fallback.enhanced;
  // A configured code of another class keeps the fallback's subject and detail.
  if (enhanced !== undefined && enhanced[0] !== cls) enhanced = `${cls}${enhanced.slice(1)}`;
  return reply(code, enhanced, action.text ?? fallback.text);
}

/** Check an action map at start-up: a `reject` with a 4xx code or a `tempfail` with a 5xx is a mistake. */
export function validateActions(check: string, actions: Readonly<Partial<Record<string, Action>>>): void {
  for (const [value, action] of Object.entries(actions)) {
    if (action?.code === undefined) continue;
    const want = action.action === 'reject' ? 5 : action.action === 'tempfail' ? 4 : undefined;
    if (want !== undefined && Math.floor(action.code / 100) !== want)
      throw new Error(
        `${check} actions.${value}: ${action.action} needs a ${want}xx code, not ${action.code}`,
      );
  }
}

/**
 * What policy says about one result: the reply for `reject`/`tempfail`,
 * `undefined` otherwise (no opinion: the hook asks the next plugin). A
 * `quarantine` marks the transaction. A check about the connection may decide
 * before any transaction exists (at connect or EHLO): `tx` is then
 * `undefined` and `quarantine` has nothing to mark yet (the check decides
 * again on the transaction, see `connection-checks.ts`).
 */
export function decide(
  tx: Transaction | undefined,
  check: string,
  result: ResultValue,
  actions: ActionMap,
  replies: DefaultReplies = GENERIC_REPLIES,
): Reply | undefined {
  return applyAction(tx, check, result, actions[result], replies);
}

/**
 * Apply one configured action to what `check` found (`verdict`: the result
 * value, or a verdict of the check's own, such as rspamd's `add header`),
 * for checks whose action map is not keyed by result value. Same effects as
 * `decide`.
 */
export function applyAction(
  tx: Transaction | undefined,
  check: string,
  verdict: string,
  action: Action | undefined,
  replies: DefaultReplies = GENERIC_REPLIES,
): Reply | undefined {
  if (action === undefined) return undefined;
  switch (action.action) {
    case 'accept':
    case 'tag':
      return undefined;
    case 'quarantine': {
      if (tx === undefined) return undefined;
      const notes = policyNotes(tx);
      if (notes.quarantine === undefined) {
        notes.quarantine = { check, result: verdict };
        tx.attributes.quarantine = { check, result: verdict };
      }
      return undefined;
    }
    case 'tempfail':
      return configured(action, replies.tempfail);
    case 'reject':
      return configured(action, replies.reject);
  }
}

/** Record a check's result and apply the configured action: the usual last line of a check. */
export function report<K extends CheckName>(
  tx: Transaction,
  check: K,
  result: PolicyChecks[K] & CheckResult,
  actions: ActionMap,
  replies?: DefaultReplies,
): Reply | undefined {
  recordResult(tx, check, result);
  const found: CheckResult = result;
  const verdict = decide(tx, check, found.result, actions, replies);
  if (verdict !== undefined)
    tx.log.info({ check, result: found.result, reason: found.reason }, 'policy refused');
  return verdict;
}
