/**
 * Gives each plugin its scoped API and wraps every tap it makes: a per-plugin
 * timeout, error isolation (a failing tap becomes 451 4.3.0 and a log line
 * naming the plugin and hook, never the error text on the wire) and listener
 * scoping.
 */
import type { Logger } from 'pino';
import { describe } from './errors.ts';
import { BAIL_HOOKS, callBail, type Hooks, PARALLEL_HOOKS, Stage, WATERFALL_HOOKS } from './hooks.ts';
import type { HookTaps, Outbound, PluginApi, ServerFacts, TapOptions } from './plugin.ts';
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
}

/** What the tap wrappers count per plugin and hook. */
export interface HookCounters {
  calls: number;
  failures: number;
  timeouts: number;
}

type AnyHandler = (...args: never[]) => unknown;
type AnyHook = {
  tapPromise(options: { name: string; stage?: number; before?: string }, fn: AnyHandler): void;
};

const TIMED_OUT = Symbol('timeout');

function sessionOf(arg: unknown): Session | undefined {
  if (typeof arg !== 'object' || arg === null) return undefined;
  if ('listener' in arg) return arg as Session;
  if ('session' in arg) return (arg as { session: Session }).session;
  return undefined;
}

/**
 * Settle with `pending`, or with `TIMED_OUT` once `ms` pass: one promise and
 * one timer a call (no `Promise.race`, no async frames: this runs for every
 * asynchronous tap of every transaction).
 */
function within<T>(pending: PromiseLike<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms, TIMED_OUT);
    pending.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** Build the tap-only hook view for one plugin instance. */
export function createHookTaps(hooks: Hooks, policy: TapPolicy): HookTaps {
  const view: Record<string, { tap(handler: AnyHandler, options?: TapOptions): void }> = {};
  const inScope = (args: readonly unknown[]): boolean => {
    if (!policy.listeners) return true;
    const session = sessionOf(args[0]);
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
  const counters = (hook: string): HookCounters => {
    let c = policy.metrics.get(hook);
    if (!c) {
      c = { calls: 0, failures: 0, timeouts: 0 };
      policy.metrics.set(hook, c);
    }
    return c;
  };
  const fail = (hook: string, args: readonly unknown[], err: unknown) => {
    const c = counters(hook);
    if (err === TIMED_OUT) c.timeouts++;
    else c.failures++;
    const session = sessionOf(args[0]);
    const log = session?.log ?? policy.log;
    if (err === TIMED_OUT) log.error({ plugin: policy.name, hook }, 'plugin hook timed out');
    else log.error({ plugin: policy.name, hook, err }, `plugin hook failed: ${describe(err)}`);
  };

  for (const name of BAIL_HOOKS) {
    const hook = hooks[name] as unknown as AnyHook;
    const ms = name === 'deliver' ? policy.deliveryTimeout : policy.timeout;
    const settle = (pending: PromiseLike<unknown>, args: readonly unknown[]) =>
      within(pending, ms).then(
        (result) => {
          if (result !== TIMED_OUT) return result ?? undefined; // null would stop a bail chain without an answer
          fail(name, args, TIMED_OUT);
          return Replies.localError;
        },
        (err: unknown) => {
          fail(name, args, err);
          return Replies.localError;
        },
      );
    view[name] = {
      tap(handler, options) {
        const count = counters(name);
        // Synchronous answers stay synchronous (see `callBail`); promises get the timeout.
        hook.tapPromise(tapOptions(options), ((...args: unknown[]) => {
          if (!inScope(args)) return undefined;
          count.calls++;
          let result: unknown;
          try {
            result = (handler as (...a: unknown[]) => unknown)(...args);
          } catch (err) {
            fail(name, args, err);
            return Replies.localError;
          }
          if (typeof (result as { then?: unknown } | null)?.then === 'function') {
            return settle(result as PromiseLike<unknown>, args);
          }
          return result ?? undefined;
        }) as AnyHandler);
      },
    };
  }
  for (const name of WATERFALL_HOOKS) {
    const hook = hooks[name] as unknown as AnyHook;
    const settle = (pending: PromiseLike<unknown>, args: readonly unknown[]) =>
      within(pending, policy.timeout).then(
        (result) => {
          if (result === TIMED_OUT) fail(name, args.slice(1), TIMED_OUT);
          return result === TIMED_OUT || result === undefined ? args[0] : result;
        },
        (err: unknown) => {
          fail(name, args.slice(1), err);
          return args[0];
        },
      );
    view[name] = {
      tap(handler, options) {
        const count = counters(name);
        // A failing or timed-out transform is skipped: the value passes on unchanged.
        hook.tapPromise(tapOptions(options), ((...args: unknown[]) => {
          if (!inScope(args.slice(1))) return args[0];
          count.calls++;
          let result: unknown;
          try {
            result = (handler as (...a: unknown[]) => unknown)(...args);
          } catch (err) {
            fail(name, args.slice(1), err);
            return args[0];
          }
          if (typeof (result as { then?: unknown } | null)?.then === 'function') {
            return settle(result as PromiseLike<unknown>, args);
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
        hook.tapPromise(tapOptions(options), (...args: unknown[]): Promise<void> => {
          if (!inScope(args)) return Promise.resolve();
          count.calls++;
          let result: unknown;
          try {
            result = (handler as (...a: unknown[]) => unknown)(...args);
          } catch (err) {
            fail(name, args, err);
            return Promise.resolve();
          }
          if (typeof (result as { then?: unknown } | null)?.then !== 'function') return Promise.resolve();
          return within(result as PromiseLike<unknown>, policy.timeout).then(
            (settled) => {
              if (settled === TIMED_OUT) fail(name, args, TIMED_OUT);
            },
            (err: unknown) => fail(name, args, err),
          );
        });
      },
    };
  }
  return Object.freeze(view) as unknown as HookTaps;
}

export interface PluginInstanceOptions<C> {
  readonly hooks: Hooks;
  readonly registry: Registry;
  readonly policy: TapPolicy;
  readonly config: C;
  readonly facts: ServerFacts;
  readonly onClose: (fn: () => unknown) => void;
  readonly onStart: (fn: () => unknown) => void;
  readonly outbound: Outbound;
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
    service: (key) => registry.service(key),
    onStart: (fn) => opts.onStart(fn),
    onClose: (fn) => opts.onClose(fn),
  } satisfies PluginApi<C>);
}

/** The outbound calls plugins make into the hooks (shared by every plugin of a server). */
export function createOutbound(hooks: Hooks): Outbound {
  return Object.freeze({
    deliver: async (job) => callBail(hooks, 'deliver', job),
    delivered: (job, r) => (hooks.delivered.isUsed() ? hooks.delivered.promise(job, r) : Promise.resolve()),
    deferred: (job, r) => (hooks.deferred.isUsed() ? hooks.deferred.promise(job, r) : Promise.resolve()),
    bounced: (job, r) => (hooks.bounced.isUsed() ? hooks.bounced.promise(job, r) : Promise.resolve()),
  } satisfies Outbound);
}
