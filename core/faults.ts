/**
 * Faults a plugin raises outside its hook calls: a rejected promise nobody
 * awaits, a throw in a timer, a tick or an emitter's listener. Plugin code runs
 * inside an `AsyncLocalStorage` scope naming the plugin and hook (entered by
 * the tap wrappers in `plugin-host.ts`, and around `register`, `onStart` and
 * `onClose`); every callback and promise created there inherits it. One
 * process-level dispatcher, installed while at least one server that asked for
 * it is attached, routes each fault to the server whose scope it carries.
 *
 * A fault without a scope is not a plugin's: the process state is unknown, so
 * every attached server shuts down gracefully, the dispatcher detaches, and the
 * error is raised again to take Node's own course (exit status 1, or the
 * embedding application's handler).
 */
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';

/** How the fault reached the process. */
export type FaultKind = 'unhandledRejection' | 'uncaughtException';

/** The server side of the dispatcher. */
export interface FaultSink {
  /** A fault raised by plugin code running in `scope`. Must not throw. */
  pluginFault(scope: FaultScope, err: unknown, kind: FaultKind): void;
  /** A fault no plugin owns: shut down gracefully. Resolves once closed. */
  fatal(err: unknown, kind: FaultKind): Promise<void>;
}

/** Who runs: one object per plugin and hook, made once and reused for every call. */
export interface FaultScope {
  readonly plugin: string;
  /** Hook name, or `register` / `start` / `close` for the plugin's lifecycle code. */
  readonly hook: string;
  readonly sink: FaultSink;
}

// Process-wide by nature: process events are. Everything else hangs off the servers.
const context = new AsyncLocalStorage<FaultScope>();
const sinks = new Set<FaultSink>();
let fatalSeen = false;

/**
 * Wrap `fn` so each call runs inside `scope` (no scope: `fn` itself, at no
 * cost). The hot path: rather than `context.run` per call (a new context
 * frame each time, some hundreds of ns), the scope's frame is captured once in
 * an `AsyncResource` and each call only switches to it (tens of ns). The cost:
 * plugin code sees the async context of the wrapping (other
 * `AsyncLocalStorage` stores as they were then), not its caller's.
 */
export function scoped<A extends unknown[], R>(
  scope: FaultScope | undefined,
  fn: (...args: A) => R,
): (...args: A) => R {
  if (!scope) return fn;
  const resource = context.run(
    scope,
    () => new AsyncResource('mailframe.plugin', { requireManualDestroy: true }),
  );
  return (...args: A) => resource.runInAsyncScope(fn, undefined, ...args);
}

/** Run `fn` inside `scope` (lifecycle code: `register`, `onStart`, `onClose`). */
export function runScoped<R>(scope: FaultScope | undefined, fn: () => R): R {
  return scope ? context.run(scope, fn) : fn();
}

function onException(err: unknown): void {
  dispatch(err, 'uncaughtException');
}

function onRejection(reason: unknown): void {
  dispatch(reason, 'unhandledRejection');
}

function dispatch(err: unknown, kind: FaultKind): void {
  const scope = context.getStore();
  if (scope) {
    try {
      scope.sink.pluginFault(scope, err, kind);
    } catch {
      // Logging the fault failed (an error that cannot be serialised?): still not worth the process.
    }
    return;
  }
  if (fatalSeen) return; // already shutting down for an earlier one
  fatalSeen = true;
  const closing = [...sinks].map((sink) => sink.fatal(err, kind));
  Promise.allSettled(closing).then(() => {
    uninstall();
    fatalSeen = false;
    // Without our listeners, Node (or the embedder's handler) takes it from here.
    process.nextTick(() => {
      throw err;
    });
  });
}

function uninstall(): void {
  sinks.clear();
  process.off('uncaughtException', onException);
  process.off('unhandledRejection', onRejection);
}

/**
 * Route process-level faults to `sink` until the returned function is called.
 * The process listeners exist while at least one sink is attached.
 */
export function attachFaultSink(sink: FaultSink): () => void {
  if (sinks.size === 0) {
    process.on('uncaughtException', onException);
    process.on('unhandledRejection', onRejection);
  }
  sinks.add(sink);
  return () => {
    if (sinks.delete(sink) && sinks.size === 0) uninstall();
  };
}
