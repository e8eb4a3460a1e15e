/**
 * The server: validated config, loaded plugins, listeners, connection limits
 * and graceful shutdown. Everything hangs off the instance (no global state),
 * so tests can run several servers in one process.
 */
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import {
  connect as connectSocket,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { hostname as osHostname } from 'node:os';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { formatReply } from './codec/reply-format.ts';
import { createAjv, deepFreeze, validateCoreConfig, validatePluginConfig } from './config.ts';
import type { CoreConfig, ListenerConfig } from './config-schema.ts';
import { StubResolver } from './dns/resolver.ts';
import { parseNameServer, systemNameServers } from './dns/servers.ts';
import type { DnsResolver } from './dns/types.ts';
import { describe, Errors, MailframeError } from './errors.ts';
import { attachFaultSink, type FaultKind, type FaultScope, type FaultSink, runScoped } from './faults.ts';
import { closePlugin, Generation, type LoadedPlugin } from './generation.ts';
import { createHooks, type Hooks } from './hooks.ts';
import { IdleSweep } from './idle-sweep.ts';
import { resolvePlugin } from './loader.ts';
import { silentLogger } from './log.ts';
import { Observers } from './observers.ts';
import type {
  Clock,
  HookMetric,
  PluginDefinition,
  ReloadResult,
  ServerFacts,
  ServerStatus,
  TrafficCounters,
} from './plugin.ts';
import {
  createOutbound,
  createPluginApi,
  faultScope,
  type HookCounters,
  hookCounters,
  type TapPolicy,
} from './plugin-host.ts';
import { addressMatcher, normaliseIp, type ProxyHeader, readProxyHeader } from './proxy-protocol.ts';
import { Registry } from './registry.ts';
import { entryKey, type PreparedPlugin, planReload } from './reload.ts';
import { Replies } from './reply.ts';
import { SmtpSession } from './session/session.ts';
import type { ListenerInfo } from './types.ts';

export interface ServerOptions {
  /** The parsed `mailframe.json` (validated here). */
  readonly config: unknown;
  /** Directory relative paths in the config resolve against (default: cwd). */
  readonly baseDir?: string;
  readonly logger?: Logger;
  /** Plugin definitions by name, consulted before files, bundled plugins and npm. */
  readonly definitions?: ReadonlyMap<string, PluginDefinition>;
  /**
   * Plugin values defined in code (embedding): each is found by its `name`, like
   * `definitions`, when a `plugins[]` entry of the config names it.
   */
  readonly plugins?: readonly PluginDefinition[];
  /** A DNS resolver to use instead of the one built from the `dns` settings (tests, embedders). */
  readonly dns?: DnsResolver;
  readonly clock?: Clock;
  /** The source of `api.server.random` (default `Math.random`): tests make sampling decisions deterministic. */
  readonly random?: () => number;
  /**
   * Catch faults plugins raise outside their hook calls (a rejected promise
   * nobody awaits, a throw in a timer, tick or listener) with process-level
   * handlers: each is logged and counted against the plugin and hook that
   * started the code, and the server keeps serving. A fault no plugin owns
   * shuts the server down gracefully and is then raised again (see
   * docs/operations.md, "Faults"). Default false: an application embedding
   * the server keeps the process to itself; `mailframe start` turns it on.
   */
  readonly catchFaults?: boolean;
  /**
   * Where `reload()` without arguments reads the configuration again (the CLI
   * passes its file). Without it such a reload is refused.
   */
  readonly configSource?: () => Promise<{ readonly raw: unknown; readonly baseDir: string }>;
}

export type { HookMetric } from './plugin.ts';

export interface ListeningAddress {
  readonly name: string;
  /** For a Unix socket listener: its path (and `port` is 0). */
  readonly host: string;
  readonly port: number;
  /** The Unix socket path, for a listener on one. */
  readonly path?: string;
}

const systemClock: Clock = { now: () => Date.now() };

export class MailServer {
  readonly log: Logger;
  readonly hostname: string;
  readonly dataDir: string;
  readonly spoolDir: string;
  /** Who watches sessions (metrics, live views): see `observers.ts` and `PluginApi.observe`. */
  readonly observers: Observers;
  /** The outbound calls into the hooks of the current generation. */
  readonly outbound = createOutbound(() => this.#current.hooks);
  readonly #baseDir: string;
  readonly #clock: Clock;
  readonly #random: () => number;
  /** The resolver built from the config (closed with the server); `undefined` when one was injected. */
  readonly #ownResolver: StubResolver | undefined;
  readonly #dns: DnsResolver;
  /** The configuration new sessions get. */
  #current: Generation;
  /** Generations replaced by a reload whose sessions have not all ended. */
  readonly #retiring = new Set<Generation>();
  /** Retirements under way (their instances closing): shutdown waits for them. */
  readonly #retirements = new Set<Promise<void>>();
  #generationSeq = 1;
  readonly #given: ReadonlyMap<string, PluginDefinition>;
  readonly #configSource: ServerOptions['configSource'];
  #reloading: Promise<unknown> = Promise.resolve();
  readonly #servers = new Map<string, { listener: ListenerConfig; server: NetServer }>();
  readonly #sessions = new Set<SmtpSession>();
  readonly idle: IdleSweep;
  readonly #perIp = new Map<string, number>();
  /**
   * Hook counters by plugin id, since start: every instance of an id (one a
   * reload replaced, its successor) counts into the same ones, so they never
   * go back when a retired instance closes.
   */
  readonly #hookCounters = new Map<string, Map<string, HookCounters>>();
  readonly #idPrefix: string;
  #idSeq = 0;
  #draining = false;
  /** Every plugin's start callbacks ran (see `ServerStatus.ready`). */
  #started = false;
  #listening = false;
  readonly traffic: { -readonly [K in keyof TrafficCounters]: number } = {
    connections: 0,
    messages: 0,
    bytes: 0,
    refused: 0,
  };
  readonly #status: ServerStatus;
  #closing: Promise<void> | undefined;
  /** Where process-level faults are routed while `catchFaults` is on (kept off the public surface). */
  readonly #faultSink: FaultSink | undefined;
  #detachFaults: (() => void) | undefined;

  private constructor(config: CoreConfig, opts: ServerOptions, given: ReadonlyMap<string, PluginDefinition>) {
    this.log = opts.logger ?? silentLogger();
    this.observers = new Observers(this.log);
    this.hostname = config.hostname ?? osHostname();
    this.#baseDir = opts.baseDir ?? process.cwd();
    this.dataDir = resolve(this.#baseDir, config.dataDir);
    this.spoolDir = resolve(this.dataDir, 'spool');
    this.#clock = opts.clock ?? systemClock;
    this.#random = opts.random ?? Math.random;
    this.#given = given;
    this.#configSource = opts.configSource;
    this.#idPrefix = (Date.now() % 2176782336).toString(36).padStart(6, '0');
    this.idle = new IdleSweep(Math.min(config.timeouts.command, config.timeouts.data), (now) => {
      for (const s of this.#sessions) s.checkIdle(now);
    });
    this.#ownResolver = opts.dns
      ? undefined
      : createResolver(config.dns, this.#clock, this.log.child({ component: 'dns' }));
    this.#dns = opts.dns ?? (this.#ownResolver as DnsResolver);
    this.#status = this.#makeStatus();
    this.#current = this.#newGeneration(1, config);
    if (opts.catchFaults) {
      this.#faultSink = {
        pluginFault: (scope, err, kind) => this.#pluginFault(scope, err, kind),
        fatal: (err, kind) => this.#fatal(err, kind),
      };
      this.#detachFaults = attachFaultSink(this.#faultSink);
    }
  }

  #makeStatus(): ServerStatus {
    const server = this;
    return Object.freeze({
      get ready() {
        return server.#started && server.#listening && !server.#draining;
      },
      get draining() {
        return server.#draining;
      },
      get connections() {
        return server.#sessions.size;
      },
      traffic: () => ({ ...server.traffic }),
      hookMetrics: () => server.hookMetrics(),
      /** The current generation's (after a reload, the new one). */
      get config() {
        return server.config;
      },
      plugins: () => server.#current.plugins.map((p) => p.instance),
    });
  }

  #newGeneration(number: number, config: CoreConfig): Generation {
    const facts: ServerFacts = Object.freeze({
      hostname: this.hostname,
      limits: config.limits,
      dataDir: this.dataDir,
      dns: this.#dns,
      clock: this.#clock,
      status: this.#status,
      random: this.#random,
    });
    const server = this;
    const side = {
      get observers() {
        return server.observers;
      },
      get idle() {
        return server.idle;
      },
      get spoolDir() {
        return server.spoolDir;
      },
      get hostname() {
        return server.hostname;
      },
      get draining() {
        return server.#draining;
      },
      traffic: this.traffic,
      now: () => this.#clock.now(),
      nextId: () => this.#nextId(),
      sessionClosed: (g: Generation, s: SmtpSession) => this.#sessionClosed(g, s),
    };
    return new Generation(side, number, config, createHooks(), new Registry(), facts);
  }

  /** The configuration new sessions get (validated, with defaults, frozen). */
  get config(): Readonly<CoreConfig> {
    return this.#current.config;
  }
  /** The hooks of the current generation (the one new sessions get). */
  get hooks(): Hooks {
    return this.#current.hooks;
  }
  /** Verbs, parameters and services of the current generation. */
  get registry(): Registry {
    return this.#current.registry;
  }
  get facts(): ServerFacts {
    return this.#current.facts;
  }
  /** The current generation's number: 1 at start, one more after each applied reload. */
  get generation(): number {
    return this.#current.number;
  }

  /** Validate the config, load every plugin in order, and prepare the data directory. Does not listen yet. */
  static async create(opts: ServerOptions): Promise<MailServer> {
    const given = new Map<string, PluginDefinition>(opts.definitions ?? []);
    for (const def of opts.plugins ?? []) given.set(def.name, def);
    const { config, prepared, errors } = await prepareConfig(
      opts.config,
      opts.baseDir ?? process.cwd(),
      given,
    );
    if (errors.length > 0) throw Errors.configInvalid(errors);
    const server = new MailServer(config, opts, given);
    const gen = server.#current;
    try {
      await mkdir(server.spoolDir, { recursive: true, mode: 0o700 });
      for (const p of prepared) await server.#loadPlugin(gen, p);
      await server.#startPlugins(gen.plugins);
      server.#started = true;
    } catch (err) {
      await server.#closePlugins();
      server.#ownResolver?.close();
      server.#stopCatchingFaults();
      throw err;
    }
    return server;
  }

  /**
   * Run the plugins' start callbacks in order. `ms`: how long each plugin's may
   * take (a reload: one that hangs must not hold every later reload up).
   */
  async #startPlugins(plugins: readonly LoadedPlugin[], ms?: number): Promise<void> {
    for (const p of plugins) {
      const scope = faultScope(p.policy, 'start');
      let timer: NodeJS.Timeout | undefined;
      const expired =
        ms === undefined
          ? undefined
          : new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(Errors.pluginTimeout(p.policy.name, ms)), ms);
            });
      try {
        for (const fn of p.starters) {
          const started = Promise.resolve().then(() => runScoped(scope, fn));
          await (expired ? Promise.race([started, expired]) : started);
        }
      } catch (err) {
        throw Errors.pluginRegister(p.policy.name, err);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  async #loadPlugin(gen: Generation, p: PreparedPlugin): Promise<LoadedPlugin> {
    const { id, def, config, entry } = p;
    const log = this.log.child({ plugin: id });
    const policy: TapPolicy = {
      name: id,
      log,
      timeout: entry?.timeout ?? gen.config.timeouts.hook,
      deliveryTimeout: entry?.timeout ?? gen.config.timeouts.delivery,
      listeners: entry?.listeners ? new Set(entry.listeners) : undefined,
      metrics: this.#countersOf(id),
      faults: this.#faultSink,
      observers: this.observers,
    };
    const loaded: LoadedPlugin = {
      id,
      def,
      instance: Object.freeze({ id, plugin: def.name, config, schema: def.schema }),
      entryKey: p.key,
      policy,
      starters: [],
      closers: [],
      users: 1,
      newest: gen,
      closed: false,
    };
    gen.plugins.push(loaded);
    // A register that timed out (the instance was closed) may go on: what it adds then closes at once.
    const closeOrKeep = (fn: () => unknown) => {
      if (!loaded.closed) loaded.closers.push(fn);
      else
        void Promise.resolve()
          .then(() => runScoped(faultScope(policy, 'close'), fn))
          .catch((err: unknown) => log.error({ plugin: id, err }, `plugin close failed: ${describe(err)}`));
    };
    const api = createPluginApi({
      hooks: gen.hooks,
      registry: gen.registry,
      services: () => loaded.newest.registry,
      config,
      facts: gen.facts,
      outbound: this.outbound,
      onClose: (fn) => closeOrKeep(fn),
      onStart: (fn) => loaded.starters.push(fn),
      observe: (observer) => closeOrKeep(this.observers.add(id, observer)),
      reload: () => this.reload(),
      policy,
    });
    const scope = faultScope(policy, 'register');
    const ms = gen.config.timeouts.pluginStart;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        Promise.resolve().then(() => runScoped(scope, () => def.register(api, config as never))),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(Errors.pluginTimeout(id, ms)), ms);
        }),
      ]);
    } catch (err) {
      if (err instanceof MailframeError) throw err;
      throw Errors.pluginRegister(id, err);
    } finally {
      clearTimeout(timer);
    }
    log.debug('plugin loaded');
    return loaded;
  }

  get draining(): boolean {
    return this.#draining;
  }
  now(): number {
    return this.#clock.now();
  }

  #sessionClosed(gen: Generation, session: SmtpSession): void {
    if (!this.#sessions.delete(session)) return;
    this.observers.connection?.(session, 'close');
    if (this.#sessions.size === 0) this.idle.stop();
    const ip = session.remote.address;
    const n = (this.#perIp.get(ip) ?? 1) - 1;
    if (n <= 0) this.#perIp.delete(ip);
    else this.#perIp.set(ip, n);
    gen.sessions--;
    if (gen.sessions === 0 && this.#retiring.has(gen)) this.#retireLater(gen);
  }

  /** Retire `gen` without waiting (a close that hangs must hold up neither sessions nor reloads); shutdown waits. */
  #retireLater(gen: Generation): void {
    const retiring = this.#retire(gen);
    this.#retirements.add(retiring);
    void retiring.finally(() => this.#retirements.delete(retiring));
  }

  #countersOf(id: string): Map<string, HookCounters> {
    let counters = this.#hookCounters.get(id);
    if (!counters) {
      counters = new Map<string, HookCounters>();
      this.#hookCounters.set(id, counters);
    }
    return counters;
  }

  #nextId(): string {
    return this.#idPrefix + (++this.#idSeq).toString(36).padStart(5, '0');
  }

  /** A generation replaced by a reload whose last session ended: close the instances only it used. */
  async #retire(gen: Generation): Promise<void> {
    this.#retiring.delete(gen);
    const closing = [...gen.plugins].reverse().filter((p) => --p.users === 0);
    for (const p of closing)
      await closePlugin(p, this.log, async (fn) => runScoped(faultScope(p.policy, 'close'), fn));
    if (closing.length > 0)
      this.log.info(
        { generation: gen.number, plugins: closing.map((p) => p.id) },
        'plugin instances of an earlier configuration closed',
      );
  }

  // ---- listeners ----------------------------------------------------------

  /** Start every configured listener. */
  async listen(): Promise<ListeningAddress[]> {
    for (const listener of this.config.listeners) {
      this.#servers.set(listener.name, await this.#openListener(listener, this.#current.registry));
    }
    this.#listening = true;
    return this.addresses();
  }

  async #openListener(
    listener: ListenerConfig,
    registry: Registry,
  ): Promise<{ listener: ListenerConfig; server: NetServer }> {
    const info: ListenerInfo = Object.freeze({
      name: listener.name,
      role: listener.role,
      implicitTls: listener.implicitTls,
      protocol: listener.protocol,
    });
    if (info.implicitTls && !registry.service('tls')) {
      throw Errors.listen(
        `${listener.name}`,
        new Error('implicitTls needs a TLS plugin (e.g. "tls") loaded'),
      );
    }
    const log = this.log.child({ listener: listener.name });
    // Only listeners behind a load balancer read a PROXY header, and only from these peers.
    const proxyFrom = listener.proxyProtocol ? addressMatcher(listener.trustedProxies) : undefined;
    const server = createNetServer({ noDelay: true, allowHalfOpen: true }, (socket) =>
      this.#accept(socket, proxyFrom, info, log),
    );
    server.on('error', (err) => log.error({ err }, 'listener error'));
    const path = listener.path === undefined ? undefined : resolve(this.#baseDir, listener.path);
    if (path !== undefined) await removeStaleSocket(path);
    await new Promise<void>((ok, fail) => {
      const where = path ?? `${listener.host}:${listener.port}`;
      server.once('error', (err) => fail(Errors.listen(where, err)));
      server.listen(path !== undefined ? { path } : { host: listener.host, port: listener.port }, () => ok());
    });
    if (path !== undefined && listener.pathMode !== undefined) {
      const mode = Number.parseInt(listener.pathMode, 8);
      await chmod(path, mode).catch((err: unknown) => {
        server.close();
        throw Errors.listen(path, err);
      });
    }
    log.info({ address: this.#addressOf(server, listener) }, 'listening');
    return { listener, server };
  }

  #addressOf(server: NetServer, listener: ListenerConfig): ListeningAddress {
    const a = server.address();
    if (typeof a === 'string') return { name: listener.name, host: a, port: 0, path: a };
    if (a) return { name: listener.name, host: a.address, port: a.port };
    return { name: listener.name, host: listener.path ?? listener.host, port: listener.port ?? 0 };
  }

  addresses(): ListeningAddress[] {
    return [...this.#servers.values()].map(({ server, listener }) => this.#addressOf(server, listener));
  }

  #accept(
    socket: Socket,
    proxyFrom: ((ip: string) => boolean) | undefined,
    info: ListenerInfo,
    log: Logger,
  ): void {
    socket.on('error', ignoreError); // a reset before the session attaches must not crash the process
    if (this.#draining) {
      refuse(socket, Replies.shuttingDown);
      return;
    }
    if (!proxyFrom) {
      this.#open(socket, info, log, undefined);
      return;
    }
    const peer = socket.remoteAddress ?? '';
    if (!proxyFrom(peer)) {
      log.warn({ remote: peer }, 'PROXY header from an untrusted peer: disconnected');
      socket.destroy();
      return;
    }
    readProxyHeader(socket, this.config.timeouts.command).then(
      (header) => this.#open(socket, info, log, header),
      (err) => {
        log.info({ remote: peer, err: describe(err) }, 'bad PROXY header: disconnected');
        socket.destroy();
      },
    );
  }

  #open(socket: Socket, listener: ListenerInfo, log: Logger, proxied: ProxyHeader | undefined): void {
    const ip = proxied?.remote?.address ?? normaliseIp(socket.remoteAddress ?? '');
    const limits = this.config.limits;
    if (this.#sessions.size >= limits.maxConnections) {
      log.warn({ remote: ip }, 'connection limit reached');
      refuse(socket, Replies.tooManyConnections);
      return;
    }
    const count = this.#perIp.get(ip) ?? 0;
    // Clients on a Unix socket (no address) are local: only the total limit applies to them.
    if (ip !== '' && count >= limits.maxConnectionsPerIp) {
      log.info({ remote: ip }, 'per-address connection limit reached');
      refuse(socket, Replies.tooManyConnections);
      return;
    }
    this.#perIp.set(ip, count + 1);
    this.traffic.connections++;
    socket.off('error', ignoreError);
    // The session keeps the generation current now to its end (see generation.ts).
    const gen = this.#current;
    const session = new SmtpSession(gen, socket, listener, log, proxied);
    this.#sessions.add(session);
    gen.sessions++;
    this.observers.connection?.(session, 'open');
    this.idle.start();
    const tls = listener.implicitTls ? gen.registry.service('tls') : undefined;
    const begin = tls ? session.startTls(tls.serverOptions()) : Promise.resolve();
    begin
      .then(() => session.start())
      .catch((err) => {
        session.log.debug({ err: describe(err) }, 'session ended before greeting');
        socket.destroy();
      });
  }

  // ---- faults (see faults.ts) ---------------------------------------------

  /** A fault plugin code raised outside its hook call: log, count, keep serving. */
  #pluginFault(scope: FaultScope, err: unknown, kind: FaultKind): void {
    // Also for an instance a reload retired: its counters are its plugin id's.
    const counters = this.#hookCounters.get(scope.plugin);
    if (counters) hookCounters(counters, scope.hook).faults++;
    this.log.error(
      { plugin: scope.plugin, hook: scope.hook, fault: kind, err },
      `plugin fault outside its hook call: ${describe(err)}`,
    );
  }

  /** A fault no plugin owns: the process is in an unknown state, so shut down gracefully. */
  #fatal(err: unknown, kind: FaultKind): Promise<void> {
    this.log.fatal(
      { fault: kind, err },
      `uncaught exception outside any plugin: shutting down (${describe(err)})`,
    );
    return this.close();
  }

  #stopCatchingFaults(): void {
    this.#detachFaults?.();
    this.#detachFaults = undefined;
  }

  /**
   * Per plugin id and hook: taps called, failed (451 or skipped), timed out and
   * faults raised later, since start, over every instance of the id (a reload
   * replacing a plugin does not reset them).
   */
  hookMetrics(): HookMetric[] {
    const out: HookMetric[] = [];
    for (const [plugin, counters] of this.#hookCounters) {
      for (const [hook, c] of counters) out.push({ plugin, hook, ...c });
    }
    return out;
  }

  /** Plugin instances still open: the current generation's, then those only retiring ones use. */
  #instances(): LoadedPlugin[] {
    const out = [...this.#current.plugins];
    for (const g of this.#retiring) for (const p of g.plugins) if (!out.includes(p)) out.push(p);
    return out.filter((p) => !p.closed);
  }

  /** Open sessions (for tests and metrics). */
  get connections(): number {
    return this.#sessions.size;
  }

  // ---- shutdown -------------------------------------------------------------

  /**
   * Graceful shutdown: stop accepting, 421 to idle sessions, let open
   * transactions finish within `grace` ms, then 421 to the rest and close
   * plugins in reverse load order.
   */
  close(grace = this.config.timeouts.shutdownGrace): Promise<void> {
    this.#closing ??= this.#shutdown(grace);
    return this.#closing;
  }

  async #shutdown(grace: number): Promise<void> {
    this.#draining = true;
    this.log.info({ sessions: this.#sessions.size }, 'shutting down');
    const stopped = [...this.#servers.values()].map(
      ({ server }) => new Promise<void>((ok) => server.close(() => ok())),
    );
    for (const s of this.#sessions) s.drain();
    const all = Promise.all([...this.#sessions].map((s) => s.closed));
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((ok) => {
      timer = setTimeout(ok, grace, 'expired');
    });
    if ((await Promise.race([all, expired])) === 'expired') {
      this.log.warn({ sessions: this.#sessions.size }, 'grace period over, closing remaining sessions');
      for (const s of this.#sessions) s.abort();
      await Promise.race([all, new Promise((ok) => setTimeout(ok, 2000))]);
    }
    clearTimeout(timer);
    this.idle.stop();
    await Promise.all(stopped);
    // A reload under way refuses to apply once it sees the shutdown and closes what it opened:
    // let it finish first (bounded: its plugins' start could hang) so nothing it started outlives us.
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([this.#reloading, new Promise((ok) => (waited = setTimeout(ok, grace)))]);
    clearTimeout(waited);
    await this.#closePlugins();
    this.#ownResolver?.close();
    this.#stopCatchingFaults();
    this.log.info('stopped');
  }

  async #closePlugins(): Promise<void> {
    const troubled = this.hookMetrics().filter((m) => m.failures > 0 || m.timeouts > 0 || m.faults > 0);
    if (troubled.length > 0)
      this.log.warn({ hooks: troubled }, 'plugin hooks that failed, timed out or faulted since start');
    for (const p of this.#instances().reverse())
      await closePlugin(p, this.log, async (fn) => runScoped(faultScope(p.policy, 'close'), fn));
    this.#retiring.clear();
    // Instances of an earlier configuration whose last session just ended may still be closing.
    await Promise.all(this.#retirements);
  }

  // ---- reload ---------------------------------------------------------------

  /**
   * Apply a new configuration without dropping sessions: `input`, or what
   * `configSource` reads. Validated first (a bad one changes nothing); then
   * unchanged plugins are carried over, added ones registered, changed or
   * removed ones replaced only when their definition is `reloadable`, and
   * listeners opened and closed. Sessions already open finish under the
   * configuration they began with. Never rejects; one reload at a time.
   */
  reload(input?: { readonly config: unknown; readonly baseDir?: string }): Promise<ReloadResult> {
    const run = this.#reloading.then(() => this.#reload(input));
    this.#reloading = run;
    return run;
  }

  async #reload(
    input: { readonly config: unknown; readonly baseDir?: string } | undefined,
  ): Promise<ReloadResult> {
    const result = await this.#applyReload(input).catch(
      (err: unknown): ReloadResult => ({
        ok: false,
        errors: err instanceof MailframeError && err.details.length > 0 ? err.details : [describe(err)],
      }),
    );
    if (result.ok) this.log.info({ ...result, ok: undefined }, 'configuration reloaded');
    else
      this.log.error(
        { errors: result.errors },
        `configuration not reloaded:\n  ${result.errors.join('\n  ')}`,
      );
    return result;
  }

  async #applyReload(
    input: { readonly config: unknown; readonly baseDir?: string } | undefined,
  ): Promise<ReloadResult> {
    if (this.#closing) return { ok: false, errors: ['the server is shutting down'] };
    let raw: unknown;
    let baseDir: string;
    if (input) {
      raw = input.config;
      baseDir = input.baseDir ?? this.#baseDir;
    } else if (this.#configSource) {
      ({ raw, baseDir } = await this.#configSource());
    } else {
      return {
        ok: false,
        errors: ['no configuration source: the server was given its configuration in code'],
      };
    }
    const { config, prepared, errors } = await prepareConfig(raw, baseDir, this.#given);
    if (errors.length > 0) return { ok: false, errors };
    const old = this.#current;
    const plan = planReload({
      old: { config: old.config, plugins: old.plugins, dataDir: this.dataDir },
      config,
      dataDir: resolve(baseDir, config.dataDir),
      prepared,
    });
    if (plan.errors.length > 0) return { ok: false, errors: plan.errors };
    const gen = this.#newGeneration(this.#generationSeq + 1, config);
    const opened = new Map<string, { listener: ListenerConfig; server: NetServer }>();
    const carried = new Set<LoadedPlugin>();
    /** Listeners whose sockets this reload closed before opening others. */
    const released: string[] = [];
    const undo = async () => {
      for (const { server } of opened.values()) server.close();
      for (const p of [...gen.plugins].reverse()) {
        if (carried.has(p)) p.users--;
        else await closePlugin(p, this.log, async (fn) => runScoped(faultScope(p.policy, 'close'), fn));
      }
    };
    try {
      for (const p of prepared) {
        const same = plan.carry.get(p.id);
        if (same) {
          gen.carry(same, old);
          carried.add(same);
        } else await this.#loadPlugin(gen, p);
      }
      await this.#startPlugins(
        gen.plugins.filter((p) => !carried.has(p)),
        config.timeouts.pluginStart,
      );
      // Before listen(), which opens the current generation's listeners, there are none to change.
      if (this.#listening) {
        // Listeners whose settings changed are reopened, and removed ones may leave their port to
        // another (a listener renamed): their old sockets go first. close() frees the port at once;
        // its callback would wait for the sessions, which carry on.
        for (const name of [...plan.listeners.reopened, ...plan.listeners.closed]) {
          this.#servers.get(name)?.server.close();
          released.push(name);
        }
        if (released.length > 0) await new Promise((ok) => setImmediate(ok));
        for (const listener of config.listeners) {
          if (plan.listeners.kept.includes(listener.name)) continue;
          opened.set(listener.name, await this.#openListener(listener, gen.registry));
        }
      }
    } catch (err) {
      await undo();
      // A listener closed above comes back with its old settings (not while shutting down).
      if (this.#closing) throw err;
      for (const name of released) {
        const before = this.#servers.get(name);
        if (!before) continue;
        const back = await this.#openListener(before.listener, old.registry).catch((e: unknown) => {
          this.log.error({ listener: name, err: describe(e) }, 'listener not reopened after a failed reload');
          return before;
        });
        this.#servers.set(name, back);
      }
      throw err;
    }
    if (this.#closing) {
      // close() began while this reload was under way: it closed the listeners and plugins it
      // knew of; what this reload opened would outlive it.
      await undo();
      return { ok: false, errors: ['the server is shutting down'] };
    }
    for (const name of plan.listeners.closed) this.#servers.delete(name);
    for (const [name, entry] of opened) this.#servers.set(name, entry);
    // Instances carried over read the services of the new generation from now on.
    for (const p of gen.plugins) p.newest = gen;
    this.#generationSeq = gen.number;
    this.#current = gen;
    this.#retiring.add(old);
    if (old.sessions === 0) this.#retireLater(old);
    return {
      ok: true,
      generation: gen.number,
      plugins: plan.plugins,
      listeners: {
        kept: this.#listening ? plan.listeners.kept : [],
        opened: [...opened.keys()],
        closed: released.filter((name) => plan.listeners.closed.includes(name)),
      },
    };
  }
}

/** Validate a configuration and resolve its plugins, collecting every error (start-up and reload). */
async function prepareConfig(
  raw: unknown,
  baseDir: string,
  given: ReadonlyMap<string, PluginDefinition>,
): Promise<{ config: CoreConfig; prepared: PreparedPlugin[]; errors: string[] }> {
  const ajv = createAjv();
  const { config, errors } = validateCoreConfig(ajv, raw);
  // Resolve and validate every plugin before running any, so all errors are reported at once.
  const entries = Array.isArray(config.plugins) ? config.plugins : [];
  const prepared: PreparedPlugin[] = [];
  const seen = new Set<string>();
  for (const [index, entry] of entries.entries()) {
    if (typeof entry?.plugin !== 'string') continue;
    let def: PluginDefinition;
    try {
      def = await resolvePlugin(entry.plugin, baseDir, given);
    } catch (err) {
      if (err instanceof MailframeError) errors.push(`/plugins/${index}/plugin: ${err.message}`);
      else errors.push(`/plugins/${index}/plugin: cannot load "${entry.plugin}": ${describe(err)}`);
      continue;
    }
    const id = entry.id ?? def.name;
    if (seen.has(id)) errors.push(`/plugins/${index}: ${Errors.pluginDuplicate(id).message}`);
    seen.add(id);
    for (const dep of def.dependencies ?? []) {
      if (!seen.has(dep)) errors.push(`/plugins/${index}: ${Errors.pluginDependency(id, dep).message}`);
    }
    const v = validatePluginConfig(ajv, def.schema, entry.config ?? {}, `/plugins/${index}/config`, id);
    errors.push(...v.errors);
    const key = entryKey({
      plugin: entry.plugin,
      config: v.config,
      timeout: entry.timeout,
      listeners: entry.listeners,
    });
    prepared.push({ id, def, config: deepFreeze(v.config), entry, key, index });
  }
  if (errors.length === 0) deepFreeze(config);
  return { config, prepared, errors };
}

function ignoreError(): void {}

function createResolver(dns: CoreConfig['dns'], clock: Clock, log: Logger): StubResolver {
  const servers = dns.servers?.map((s) => parseNameServer(s)).filter((s) => s !== undefined);
  return new StubResolver({
    servers: servers && servers.length > 0 ? servers : systemNameServers(),
    clock,
    timeout: dns.timeout,
    attempts: dns.attempts,
    cacheSize: dns.cacheSize,
    minTtl: dns.minTtl,
    maxTtl: dns.maxTtl,
    negativeTtl: dns.negativeTtl,
    errorTtl: dns.errorTtl,
    trustAd: dns.trustAd,
    log,
  });
}

function refuse(socket: Socket, r: import('./reply.ts').Reply): void {
  socket.end(formatReply(r, true));
  setTimeout(() => socket.destroy(), 2000).unref();
}

/**
 * A Unix socket file left by a run that did not close (a crash) makes listen
 * fail: remove it when nothing answers on it. A live socket (another server)
 * and anything that is not a socket are left alone, and listen then fails.
 */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    if (!(await lstat(path)).isSocket()) return;
  } catch {
    return;
  }
  const live = await new Promise<boolean>((ok) => {
    const probe = connectSocket({ path });
    probe.once('connect', () => {
      probe.destroy();
      ok(true);
    });
    probe.once('error', () => ok(false));
  });
  if (!live) await unlink(path).catch(() => {});
}

/** Validate config, load plugins and start listening. */
export async function createServer(opts: ServerOptions): Promise<MailServer> {
  const server = await MailServer.create(opts);
  try {
    await server.listen();
  } catch (err) {
    await server.close(0);
    throw err;
  }
  return server;
}
