/**
 * Every hook the core fires, in one place. The tapable class is the semantics:
 * bail hooks give verdicts (the first non-undefined result wins), waterfalls
 * transform a value, parallel hooks notify.
 *
 * Plugins never see this object: they get a tap-only view (see `plugin-api.ts`)
 * whose taps are wrapped with a timeout, error isolation and listener scoping.
 */
import { AsyncParallelHook, AsyncSeriesBailHook, AsyncSeriesWaterfallHook } from 'tapable';
import type { Reply } from './reply.ts';
import type {
  AuthRequest,
  AuthResult,
  DeliveryJob,
  DeliveryReport,
  ForwardPath,
  HeaderField,
  Helo,
  Message,
  QueueResult,
  RecipientResult,
  ReversePath,
  Session,
  Transaction,
} from './types.ts';

/** Named stages for ordering taps: lower runs first. Use `before:` only for real pairwise needs. */
export const Stage = Object.freeze({
  /** Guards that must see everything first (limits, early rejects). */
  FIRST: -1000,
  /** Cheap checks (syntax, local tables) before costly ones (DNS). */
  EARLY: -100,
  NORMAL: 0,
  /** Fallback answers (e.g. accept for local domains after policy checks). */
  LATE: 100,
  /**
   * Relay decisions: recipients no local-domain tap answered at `LATE` (so
   * they are not local), before the last resorts.
   */
  RELAY: 500,
  LAST: 1000,
});

/** A verdict: a reply, or `undefined` for "no opinion, ask the next plugin". */
export type Verdict = Reply | undefined;

export interface Hooks {
  /** A client connected, before the greeting. A reply other than 2xx refuses the session (554 per RFC 5321 3.1). */
  readonly connect: AsyncSeriesBailHook<[Session], Verdict>;
  /** EHLO/HELO/LHLO received and syntactically valid. */
  readonly ehlo: AsyncSeriesBailHook<[Session, Helo], Verdict>;
  /** MAIL FROM received, parsed, parameters claimed. `tx.from` is the path under judgement. */
  readonly mail: AsyncSeriesBailHook<[Transaction, ReversePath], Verdict>;
  /**
   * RCPT TO received and parsed. A 2xx reply accepts the recipient. If no plugin
   * answers, the core refuses with 550 5.7.1 (no open relay).
   */
  readonly rcpt: AsyncSeriesBailHook<[Transaction, ForwardPath], Verdict>;
  /** DATA (or the first BDAT) received with at least one accepted recipient, before 354. */
  readonly data: AsyncSeriesBailHook<[Transaction], Verdict>;
  /** The whole message has arrived and is spooled; checks read it here. */
  readonly message: AsyncSeriesBailHook<[Transaction, Message], Verdict>;
  /** Store the message durably. The first plugin that stores it answers `{ id }`; the 250 waits for it. */
  readonly queue: AsyncSeriesBailHook<[Transaction, Message], QueueResult | Reply | undefined>;
  /** Check credentials an AUTH mechanism decoded. */
  readonly auth: AsyncSeriesBailHook<[Session, AuthRequest], AuthResult | Reply | undefined>;
  /**
   * Outbound: a delivery plugin claims a job and reports per-recipient results.
   * A Reply instead means every recipient got that reply (4xx defers, 5xx fails).
   */
  readonly deliver: AsyncSeriesBailHook<[DeliveryJob], DeliveryReport | Reply | undefined>;

  /** EHLO keywords (and their parameters), e.g. `SIZE 10485760`. */
  readonly capabilities: AsyncSeriesWaterfallHook<[string[], Session]>;
  /** Header fields prepended to the message (the core's Received comes first). */
  readonly headers: AsyncSeriesWaterfallHook<[HeaderField[], Transaction]>;

  readonly delivered: AsyncParallelHook<[DeliveryJob, RecipientResult]>;
  readonly deferred: AsyncParallelHook<[DeliveryJob, RecipientResult]>;
  readonly bounced: AsyncParallelHook<[DeliveryJob, RecipientResult]>;
  /** A transaction ended without being queued (RSET, EHLO, rejection, disconnect). */
  readonly reset: AsyncParallelHook<[Transaction]>;
  /**
   * The connection was upgraded to TLS in mid-session (STARTTLS). The core has
   * discarded what it learnt from the client before (RFC 3207 4.2): EHLO, the
   * authenticated user, `session.notes`, the open transaction. A plugin that
   * keeps per-session knowledge elsewhere discards it here.
   */
  readonly secured: AsyncParallelHook<[Session]>;
  readonly disconnect: AsyncParallelHook<[Session]>;
}

export type HookName = keyof Hooks;

/** Hooks whose taps answer with a verdict (bail semantics). */
export const BAIL_HOOKS = [
  'connect',
  'ehlo',
  'mail',
  'rcpt',
  'data',
  'message',
  'queue',
  'auth',
  'deliver',
] as const;
export const WATERFALL_HOOKS = ['capabilities', 'headers'] as const;
export const PARALLEL_HOOKS = ['delivered', 'deferred', 'bounced', 'reset', 'secured', 'disconnect'] as const;

export type BailHookName = (typeof BAIL_HOOKS)[number];
export type WaterfallHookName = (typeof WATERFALL_HOOKS)[number];
export type ParallelHookName = (typeof PARALLEL_HOOKS)[number];

export function createHooks(): Hooks {
  return Object.freeze({
    connect: new AsyncSeriesBailHook<[Session], Verdict>(['session'], 'connect'),
    ehlo: new AsyncSeriesBailHook<[Session, Helo], Verdict>(['session', 'helo'], 'ehlo'),
    mail: new AsyncSeriesBailHook<[Transaction, ReversePath], Verdict>(['tx', 'from'], 'mail'),
    rcpt: new AsyncSeriesBailHook<[Transaction, ForwardPath], Verdict>(['tx', 'to'], 'rcpt'),
    data: new AsyncSeriesBailHook<[Transaction], Verdict>(['tx'], 'data'),
    message: new AsyncSeriesBailHook<[Transaction, Message], Verdict>(['tx', 'message'], 'message'),
    queue: new AsyncSeriesBailHook<[Transaction, Message], QueueResult | Reply | undefined>(
      ['tx', 'message'],
      'queue',
    ),
    auth: new AsyncSeriesBailHook<[Session, AuthRequest], AuthResult | Reply | undefined>(
      ['session', 'request'],
      'auth',
    ),
    deliver: new AsyncSeriesBailHook<[DeliveryJob], DeliveryReport | Reply | undefined>(['job'], 'deliver'),
    capabilities: new AsyncSeriesWaterfallHook<[string[], Session]>(['keywords', 'session'], 'capabilities'),
    headers: new AsyncSeriesWaterfallHook<[HeaderField[], Transaction]>(['fields', 'tx'], 'headers'),
    delivered: new AsyncParallelHook<[DeliveryJob, RecipientResult]>(['job', 'result'], 'delivered'),
    deferred: new AsyncParallelHook<[DeliveryJob, RecipientResult]>(['job', 'result'], 'deferred'),
    bounced: new AsyncParallelHook<[DeliveryJob, RecipientResult]>(['job', 'result'], 'bounced'),
    reset: new AsyncParallelHook<[Transaction]>(['tx'], 'reset'),
    secured: new AsyncParallelHook<[Session]>(['session'], 'secured'),
    disconnect: new AsyncParallelHook<[Session]>(['session'], 'disconnect'),
  });
}

/** Type guard: a bail result that is a reply rather than a hook-specific value. */
export function isReply(value: unknown): value is Reply {
  return (
    typeof value === 'object' && value !== null && typeof (value as { code?: unknown }).code === 'number'
  );
}

type BailArgs<K extends BailHookName> =
  Hooks[K] extends AsyncSeriesBailHook<infer A extends unknown[], infer _R> ? A : never;
type BailResult<K extends BailHookName> = Hooks[K] extends AsyncSeriesBailHook<infer _A, infer R> ? R : never;

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

/**
 * Fire a verdict hook: taps run in tapable's order (stages, `before`) with bail
 * semantics, and the call stays synchronous while taps answer synchronously, so
 * a plain table lookup costs no promise and no event-loop turn. Taps are the
 * wrappers `plugin-host.ts` registers (they never throw).
 */
export function callBail<K extends BailHookName>(
  hooks: Hooks,
  name: K,
  ...args: BailArgs<K>
): BailResult<K> | Promise<BailResult<K>> {
  const taps = hooks[name].taps;
  for (let i = 0; i < taps.length; i++) {
    const r = (taps[i]!.fn as (...a: unknown[]) => unknown)(...args);
    if (isThenable(r)) return continueBail(taps, i + 1, args, r) as Promise<BailResult<K>>;
    if (r !== undefined) return r as BailResult<K>;
  }
  return undefined as BailResult<K>;
}

async function continueBail(
  taps: ReadonlyArray<{ fn: unknown }>,
  from: number,
  args: readonly unknown[],
  pending: PromiseLike<unknown>,
): Promise<unknown> {
  const first = await pending;
  if (first !== undefined) return first;
  for (let i = from; i < taps.length; i++) {
    const r = await (taps[i]!.fn as (...a: unknown[]) => unknown)(...args);
    if (r !== undefined) return r;
  }
  return undefined;
}

type WaterfallArgs<K extends WaterfallHookName> =
  Hooks[K] extends AsyncSeriesWaterfallHook<infer A extends unknown[]> ? A : never;

/** Fire a transform hook in tapable's order; synchronous while taps answer synchronously. */
export function callWaterfall<K extends WaterfallHookName>(
  hooks: Hooks,
  name: K,
  ...args: WaterfallArgs<K>
): WaterfallArgs<K>[0] | Promise<WaterfallArgs<K>[0]> {
  const taps = hooks[name].taps;
  const rest = args.slice(1);
  let value: unknown = args[0];
  for (let i = 0; i < taps.length; i++) {
    const r = (taps[i]!.fn as (...a: unknown[]) => unknown)(value, ...rest);
    if (isThenable(r)) return continueWaterfall(taps, i + 1, rest, r) as Promise<WaterfallArgs<K>[0]>;
    value = r;
  }
  return value as WaterfallArgs<K>[0];
}

async function continueWaterfall(
  taps: ReadonlyArray<{ fn: unknown }>,
  from: number,
  rest: readonly unknown[],
  pending: PromiseLike<unknown>,
): Promise<unknown> {
  let value = await pending;
  for (let i = from; i < taps.length; i++)
    value = await (taps[i]!.fn as (...a: unknown[]) => unknown)(value, ...rest);
  return value;
}
