/**
 * A generation: one configuration with its hooks, extension registry and
 * plugin instances. A session binds to the generation current when it was
 * accepted and keeps it to its end, so a config reload (see `reload.ts`)
 * changes what new sessions get without touching established ones. A plugin
 * instance may serve several generations (carried over unchanged by a reload);
 * it closes when the last of them retires.
 */
import type { Logger } from 'pino';
import type { CoreConfig } from './config-schema.ts';
import { BAIL_HOOKS, type Hooks, PARALLEL_HOOKS, WATERFALL_HOOKS } from './hooks.ts';
import type { IdleSweep } from './idle-sweep.ts';
import type { Observers } from './observers.ts';
import type { PluginDefinition, PluginInstance, ServerFacts } from './plugin.ts';
import type { TapPolicy } from './plugin-host.ts';
import type { Registry } from './registry.ts';
import type { SessionHost, SmtpSession } from './session/session.ts';

/** One loaded plugin instance. */
export interface LoadedPlugin {
  readonly id: string;
  readonly def: PluginDefinition;
  /** What `api.server.status.plugins()` shows of it. */
  readonly instance: PluginInstance;
  /** Its config entry as validated (`plugin`, `config` with defaults, `timeout`, `listeners`), as JSON: what a reload compares. */
  readonly entryKey: string;
  /** Its name and hook counters are the policy's (`policy.name`, `policy.metrics`). */
  readonly policy: TapPolicy;
  readonly starters: Array<() => unknown>;
  readonly closers: Array<() => unknown>;
  /** Generations that use this instance and have not retired. */
  users: number;
  /** The newest generation using this instance: where its `api.service()` reads (set when a reload applies). */
  newest: Generation;
  closed: boolean;
}

/** What every generation shares: the server's side of `SessionHost`. */
export interface GenerationServer {
  readonly observers: Observers;
  readonly idle: IdleSweep;
  readonly spoolDir: string;
  readonly hostname: string;
  readonly draining: boolean;
  readonly traffic: { messages: number; bytes: number; refused: number };
  now(): number;
  nextId(): string;
  sessionClosed(generation: Generation, session: SmtpSession): void;
}

export class Generation implements SessionHost {
  readonly number: number;
  readonly config: Readonly<CoreConfig>;
  readonly hooks: Hooks;
  readonly registry: Registry;
  readonly facts: ServerFacts;
  /** Plugin instances in load order. */
  readonly plugins: LoadedPlugin[] = [];
  /** Sessions bound to this generation and still open. */
  sessions = 0;
  // What every generation shares, as plain fields: sessions read them on every reply.
  readonly observers: Observers;
  readonly idle: IdleSweep;
  readonly spoolDir: string;
  readonly hostname: string;
  readonly traffic: { messages: number; bytes: number; refused: number };
  readonly #server: GenerationServer;

  constructor(
    server: GenerationServer,
    number: number,
    config: Readonly<CoreConfig>,
    hooks: Hooks,
    registry: Registry,
    facts: ServerFacts,
  ) {
    this.#server = server;
    this.observers = server.observers;
    this.idle = server.idle;
    this.spoolDir = server.spoolDir;
    this.hostname = server.hostname;
    this.traffic = server.traffic;
    this.number = number;
    this.config = config;
    this.hooks = hooks;
    this.registry = registry;
    this.facts = facts;
  }

  get draining(): boolean {
    return this.#server.draining;
  }
  get limits() {
    return this.config.limits;
  }
  get timeouts() {
    return this.config.timeouts;
  }
  get smtp() {
    return this.config.smtp;
  }
  now(): number {
    return this.#server.now();
  }
  nextId(): string {
    return this.#server.nextId();
  }
  sessionClosed(session: SmtpSession): void {
    this.#server.sessionClosed(this, session);
  }

  /**
   * Take over `plugin` from generation `from` unchanged: the taps it made on
   * every hook (same stage and order among themselves) and the verbs,
   * parameters and services it registered. The instance itself is shared.
   */
  carry(plugin: LoadedPlugin, from: Generation): void {
    const name = plugin.policy.name;
    for (const hook of [...BAIL_HOOKS, ...WATERFALL_HOOKS, ...PARALLEL_HOOKS]) {
      const target = this.hooks[hook] as unknown as {
        tapPromise(options: { name: string; stage?: number; before?: string | string[] }, fn: unknown): void;
      };
      for (const tap of from.hooks[hook].taps) {
        if (tap.name !== name) continue;
        const options: { name: string; stage?: number; before?: string | string[] } = { name };
        if (tap.stage !== undefined) options.stage = tap.stage;
        if (tap.before !== undefined) options.before = tap.before;
        target.tapPromise(options, tap.fn);
      }
    }
    this.registry.copyOwned(from.registry, name);
    plugin.users++;
    this.plugins.push(plugin);
  }
}

/** Close one plugin instance's closers in reverse; errors are logged. */
export async function closePlugin(
  p: LoadedPlugin,
  log: Logger,
  run: (fn: () => unknown) => Promise<unknown>,
): Promise<void> {
  if (p.closed) return;
  p.closed = true;
  for (const fn of [...p.closers].reverse()) {
    try {
      await run(fn);
    } catch (err) {
      log.error({ plugin: p.policy.name, err }, `plugin close failed: ${(err as Error)?.message ?? err}`);
    }
  }
}
