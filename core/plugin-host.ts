/**
 * Gives each plugin its scoped API and wraps every tap it makes: a per-plugin
 * timeout, error isolation (a failing tap becomes 451 4.3.0 and a log line
 * naming the plugin and hook, never the error text on the wire) and listener
 * scoping.
 */
import type { Logger } from 'pino';
import { Deadlines, TIMED_OUT } from './deadlines.ts';
import { describe } from './errors.ts';
import { type FaultScope, type FaultSink, scoped } from './faults.ts';
import { BAIL_HOOKS, callBail, type Hooks, PARALLEL_HOOKS, Stage, WATERFALL_HOOKS } from './hooks.ts';
import type { HookOutcome, Observers, ServerObserver } from './observers.ts';
import type { HookTaps, Outbound, PluginApi, ReloadResult, ServerFacts, TapOptions } from './plugin.ts';
import type { Registry } from './registry.ts';
import { Replies } from './reply.ts';
import type { Session } from './types.ts';

export interface TapPolicy {
  /** Plugin instance name (the tap name in tapable). */
  readonly name: string;
  readonly log: Logger;
  /** Timeout for inbound hooks, ms. */
  readonly timeout: number;
  /** Timeout for the `deliver` hook, ms. */
  readonly deliveryTimeout: number;
  /** Only fire for sessions of these listeners (undefined: all). */
  readonly listeners: ReadonlySet<string> | undefined;
  /** Counters this plugin's taps update, by hook name. */
  readonly metrics: Map<string, HookCounters>;
  /** Where faults the plugin raises outside its hook calls go (undefined: not caught, no scope entered). */
  readonly faults: FaultSink | undefined;
  /** The server's observers: each tap call is timed only while a `hook` observer is there. */
  readonly observers: Observers;
}

/** What the tap wrappers count per plugin and hook. */
export interface HookCounters {
  calls: number;
  failures: number;
  timeouts: number;
  /** Faults raised later by code the tap started (floating rejections, throws in timers or listeners). */
  faults: number;
}

/** The fault scope for one plugin and hook (undefined when faults are not caught). */
export function faultScope(policy: TapPolicy, hook: string): FaultScope | undefined {
  return policy.faults && Object.freeze({ plugin: policy.name, hook, sink: policy.faults });
}

/** The counters of one plugin and hook, created on first use. */
export function hookCounters(metrics: Map<string, HookCounters>, hook: string): HookCounters {
  let c = metrics.get(hook);
  if (!c) {
    c = { calls: 0, failures: 0, timeouts: 0, faults: 0 };
    metrics.set(hook, c);
  }
  return c;
}

type AnyHandler = (...args: never[]) => unknown;

type AnyHook = {
  tapPromise(options: { name: string; stage?: number; before?: string }, fn: AnyHandler): void;
};

function sessionOf(arg: unknown): Session | undefined {
  if (typeof arg !== 'object' || arg === null) return undefined;
  if ('listener' in arg) return arg as Session;
  if ('session' in arg) return (arg as { session: Session }).session;
  return undefined;
}

/** Build the tap-only hook view for one plugin instance. */
export function createHookTaps(hooks: Hooks, policy: TapPolicy): HookTaps {
  const observers = policy.observers;
  // One timer per timeout length for all of this plugin's pending calls (no setTimeout per call:
  // this runs for every asynchronous tap of every transaction).
  const inbound = new Deadlines(policy.timeout);
  const delivery =
    policy.deliveryTimeout === policy.timeout ? inbound : new Deadlines(policy.deliveryTimeout);
  /**
   * Report a call that answered with a promise to the `hook` observer, timed from
   * its return to its settling; `t0` is `performance.now()` then, -1 when nobody
   * observes. Synchronous answers are not timed: no clock read on the fast path.
   */
  const timed = (hook: string, t0: number, outcome: HookOutcome) => {
    if (t0 >= 0) observers.hook?.(policy.name, hook, (performance.now() - t0) / 1000, outcome);
  };
  const view: Record<string, { tap(handler: AnyHandler, options?: TapOptions): void }> = {};
  // `subject` is the hook argument that carries the session: the first, or for a waterfall the
  // second (after the value); passed alone so that no call copies its arguments.
  const inScope = (subject: unknown): boolean => {
    if (!policy.listeners) return true;
    const session = sessionOf(subject);
    return session === undefined || policy.listeners.has(session.listener.name);
  };
  const tapOptions = (options: TapOptions | undefined) => {
    const o: { name: string; stage: number; before?: string } = {
      name: policy.name,
      stage: options?.stage ?? Stage.NORMAL,
    };
    if (options?.before !== undefined) o.before = options.before;
    return o;
  };
  const counters = (hook: string): HookCounters => hookCounters(policy.metrics, hook);
  const fail = (hook: string, subject: unknown, err: unknown) => {
    const c = counters(hook);
    if (err === TIMED_OUT) c.timeouts++;
    else c.failures++;
    const session = sessionOf(subject);
    const log = session?.log ?? policy.log;
    if (err === TIMED_OUT) log.error({ plugin: policy.name, hook }, 'plugin hook timed out');
    else log.error({ plugin: policy.name, hook, err }, `plugin hook failed: ${describe(err)}`);
  };

  for (const name of BAIL_HOOKS) {
    const hook = hooks[name] as unknown as AnyHook;
    const deadlines = name === 'deliver' ? delivery : inbound;
    const settle = (pending: PromiseLike<unknown>, args: readonly unknown[], t0: number) =>
      deadlines.within(pending).then(
        (result) => {
          if (result !== TIMED_OUT) {
            timed(name, t0, 'ok');
            return result ?? undefined; // null would stop a bail chain without an answer
          }
          fail(name, args[0], TIMED_OUT);
          timed(name, t0, 'timeout');
          return Replies.localError;
        },
        (err: unknown) => {
          fail(name, args[0], err);
          timed(name, t0, 'failure');
          return Replies.localError;
        },
      );
    view[name] = {
      tap(handler, options) {
        const count = counters(name);
        const call = scoped(faultScope(policy, name), handler as (...a: unknown[]) => unknown);
        // Synchronous answers stay synchronous (see `callBail`); promises get the timeout.
        hook.tapPromise(tapOptions(options), ((...args: unknown[]) => {
          if (!inScope(args[0])) return undefined;
          count.calls++;
          let result: unknown;
          try {
            result = call(...args);
          } catch (err) {
            fail(name, args[0], err);
            return Replies.localError;
          }
          if (typeof (result as { then?: unknown } | null)?.then === 'function') {
            return settle(result as PromiseLike<unknown>, args, observers.hook ? performance.now() : -1);
          }
          return result ?? undefined;
        }) as AnyHandler);
      },
    };
  }
  for (const name of WATERFALL_HOOKS) {
    const hook = hooks[name] as unknown as AnyHook;
    const settle = (pending: PromiseLike<unknown>, args: readonly unknown[], t0: number) =>
      inbound.within(pending).then(
        (result) => {
          if (result === TIMED_OUT) fail(name, args[1], TIMED_OUT);
          timed(name, t0, result === TIMED_OUT ? 'timeout' : 'ok');
          return result === TIMED_OUT || result === undefined ? args[0] : result;
        },
        (err: unknown) => {
          fail(name, args[1], err);
          timed(name, t0, 'failure');
          return args[0];
        },
      );
    view[name] = {
      tap(handler, options) {
        const count = counters(name);
        const call = scoped(faultScope(policy, name), handler as (...a: unknown[]) => unknown);
        // A failing or timed-out transform is skipped: the value passes on unchanged.
        hook.tapPromise(tapOptions(options), ((...args: unknown[]) => {
          if (!inScope(args[1])) return args[0];
          count.calls++;
          let result: unknown;
          try {
            result = call(...args);
          } catch (err) {
            fail(name, args[1], err);
            return args[0];
          }
          if (typeof (result as { then?: unknown } | null)?.then === 'function') {
            return settle(result as PromiseLike<unknown>, args, observers.hook ? performance.now() : -1);
          }
          return result === undefined ? args[0] : result;
        }) as AnyHandler);
      },
    };
  }
  for (const name of PARALLEL_HOOKS) {
    const hook = hooks[name] as unknown as AnyHook;
    view[name] = {
      tap(handler, options) {
        const count = counters(name);
        const call = scoped(faultScope(policy, name), handler as (...a: unknown[]) => unknown);
        hook.tapPromise(tapOptions(options), (...args: unknown[]): Promise<void> => {
          if (!inScope(args[0])) return Promise.resolve();
          count.calls++;
          let result: unknown;
          try {
            result = call(...args);
          } catch (err) {
            fail(name, args[0], err);
            return Promise.resolve();
          }
          if (typeof (result as { then?: unknown } | null)?.then !== 'function') return Promise.resolve();
          const t0 = observers.hook ? performance.now() : -1;
          return inbound.within(result as PromiseLike<unknown>).then(
            (settled) => {
              if (settled === TIMED_OUT) fail(name, args[0], TIMED_OUT);
              timed(name, t0, settled === TIMED_OUT ? 'timeout' : 'ok');
            },
            (err: unknown) => {
              fail(name, args[0], err);
              timed(name, t0, 'failure');
            },
          );
        });
      },
    };
  }
  return Object.freeze(view) as unknown as HookTaps;
}

export interface PluginInstanceOptions<C> {
  readonly hooks: Hooks;
  /** Where the instance registers verbs, parameters and services. */
  readonly registry: Registry;
  /**
   * Where `api.service()` reads, asked at each call: the registry of the newest
   * generation using the instance, so one a config reload carried over sees the
   * services of plugins that reload added or replaced.
   */
  readonly services: () => Registry;
  readonly policy: TapPolicy;
  readonly config: C;
  readonly facts: ServerFacts;
  readonly onClose: (fn: () => unknown) => void;
  readonly onStart: (fn: () => unknown) => void;
  readonly outbound: Outbound;
  readonly observe: (observer: ServerObserver) => void;
  readonly reload: () => Promise<ReloadResult>;
}

export function createPluginApi<C>(opts: PluginInstanceOptions<C>): PluginApi<C> {
  const { registry, policy } = opts;
  return Object.freeze({
    name: policy.name,
    config: opts.config,
    hooks: createHookTaps(opts.hooks, policy),
    log: policy.log,
    server: opts.facts,
    outbound: opts.outbound,
    registerVerb: (def) => registry.addVerb(policy.name, def),
    registerParam: (def) => registry.addParam(policy.name, def),
    provide: (key, value) => registry.provide(policy.name, key, value),
    service: (key) => opts.services().service(key),
    onStart: (fn) => opts.onStart(fn),
    onClose: (fn) => opts.onClose(fn),
    observe: (observer) => opts.observe(observer),
    reload: () => opts.reload(),
  } satisfies PluginApi<C>);
}

/**
 * The outbound calls plugins make into the hooks (shared by every plugin of a
 * server): always those of the current generation, so a queue carried over a
 * config reload hands its jobs to the delivery plugins of the new one.
 */
export function createOutbound(current: () => Hooks): Outbound {
  return Object.freeze({
    deliver: async (job) => callBail(current(), 'deliver', job),
    delivered: (job, r) => {
      const hooks = current();
      return hooks.delivered.isUsed() ? hooks.delivered.promise(job, r) : Promise.resolve();
    },
    deferred: (job, r) => {
      const hooks = current();
      return hooks.deferred.isUsed() ? hooks.deferred.promise(job, r) : Promise.resolve();
    },
    bounced: (job, r) => {
      const hooks = current();
      return hooks.bounced.isUsed() ? hooks.bounced.promise(job, r) : Promise.resolve();
    },
  } satisfies Outbound);
}
