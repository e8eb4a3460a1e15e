/**
 * Plugins are values: a name, a TypeBox schema for their config, and a
 * `register` function that receives a scoped API.
 *
 *   export default definePlugin({
 *     name: 'block-domains',
 *     schema: Type.Object({ domains: Type.Array(Type.String()) }),
 *     register(api, config) {
 *       api.hooks.mail.tap((tx, from) => config.domains.includes(from.address?.asciiDomain ?? '') ? reply(550, '5.7.1', 'No') : undefined);
 *     },
 *   });
 */
import type { SecureContextOptions } from 'node:tls';
import type { Static, TSchema } from 'typebox';
import type { CoreConfig } from './config-schema.ts';
import type { DnsResolver } from './dns/types.ts';
import type { BailHookName, Hooks, ParallelHookName, WaterfallHookName } from './hooks.ts';
import type { ServerObserver } from './observers.ts';
import type { Reply } from './reply.ts';
import type {
  AuthRequest,
  AuthResult,
  DeliveryJob,
  DeliveryReport,
  Endpoint,
  Logger,
  RecipientAttributes,
  RecipientResult,
  Session,
  TlsInfo,
  Transaction,
} from './types.ts';

type MaybePromise<T> = T | Promise<T>;
type HookArgs<K extends keyof Hooks> = Hooks[K] extends { promise(...args: infer A): Promise<unknown> }
  ? A
  : never;
type HookResult<K extends keyof Hooks> = Hooks[K] extends { promise(...args: never[]): Promise<infer R> }
  ? R
  : never;

export interface TapOptions {
  /** Order among taps of the same hook: see `Stage`. Default `Stage.NORMAL`. */
  readonly stage?: number;
  /** Run before the named plugin's tap. */
  readonly before?: string;
}

/** A tap-only view of a verdict hook. Return `undefined` for "no opinion". */
export interface BailTap<K extends BailHookName> {
  tap(handler: (...args: HookArgs<K>) => MaybePromise<HookResult<K>>, options?: TapOptions): void;
}
/** A tap-only view of a transform hook: return the (possibly new) value. */
export interface WaterfallTap<K extends WaterfallHookName> {
  tap(handler: (...args: HookArgs<K>) => MaybePromise<HookArgs<K>[0]>, options?: TapOptions): void;
}
/** A tap-only view of a notification hook. */
export interface ParallelTap<K extends ParallelHookName> {
  tap(handler: (...args: HookArgs<K>) => MaybePromise<void>, options?: TapOptions): void;
}

export type HookTaps = { readonly [K in BailHookName]: BailTap<K> } & {
  readonly [K in WaterfallHookName]: WaterfallTap<K>;
} & { readonly [K in ParallelHookName]: ParallelTap<K> };

/** What a verb handler may do with the connection. */
export interface VerbContext {
  readonly session: Session;
  /** Upper-cased verb. */
  readonly verb: string;
  /** Text after the verb, as received. */
  readonly argument: string;
  /** Send a reply now (intermediate replies such as `334`); the final one is the handler's return value. */
  send(reply: Reply): void;
  /** Read the client's next line (AUTH continuations). `undefined` when the client went away. */
  readLine(): Promise<string | undefined>;
  /**
   * Switch the connection to TLS as a server. Input the client pipelined after
   * the command is discarded first (STARTTLS injection defence); after the
   * handshake the session is reset to the state after the greeting.
   */
  upgradeToTls(options: SecureContextOptions & { readonly SNICallback?: SniCallback }): Promise<TlsInfo>;
  /** The message path for data that arrives in counted chunks (BDAT, RFC 3030). */
  readonly chunks: ChunkedMessage;
  /** Ask the `auth` hook's taps about credentials an AUTH mechanism decoded (undefined: nobody answered). */
  checkCredentials(request: AuthRequest): Promise<AuthResult | Reply | undefined>;
  /**
   * Start the session over as if `remote` had connected (XCLIENT from a trusted
   * proxy): transaction, EHLO and AUTH state are dropped, the `connect` hook runs
   * again and a new greeting (or its refusal) is sent. The handler returns undefined.
   */
  reconnectAs(remote: Endpoint): Promise<void>;
}

/**
 * A message received in counted chunks rather than through DATA. It goes
 * through the same spool, `message` and `queue` hooks as DATA; DATA is refused
 * with 503 while one is open; RSET or a new EHLO discards it.
 */
export interface ChunkedMessage {
  /** Open the message for the current transaction (runs the `data` hook the first time). A reply means refused. */
  begin(): Promise<Reply | undefined>;
  /**
   * Read exactly `size` octets from the client, as they are (no dot-unstuffing):
   * into the open message, or discarded when none is open. Octets beyond the
   * size limit are read and dropped, and `finish` then answers 552 5.3.4.
   */
  read(size: number): Promise<void>;
  /** Complete the message (headers, `message` and `queue` hooks) and end the transaction; the final reply. */
  finish(): Promise<Reply>;
  /** Drop the open message; the transaction stays open. */
  abort(): Promise<void>;
}

export type SniCallback = (
  servername: string,
  cb: (err: Error | null, ctx?: import('node:tls').SecureContext) => void,
) => void;

export interface VerbDefinition {
  /** The command verb, upper case, e.g. `STARTTLS`. */
  readonly name: string;
  /** Refused with 503 before EHLO/HELO (default true). */
  readonly requiresHelo?: boolean;
  /** Refused with 503 while a transaction is open (default false). */
  readonly outsideTransaction?: boolean;
  /**
   * Octets a line of this command may have, CRLF included, and each line its
   * handler reads with `readLine`; longer is `500 5.5.6`. Default (and never
   * less than) `limits.maxLineLength`, 512 (RFC 5321 4.5.3.1.4). Set it only
   * where the extension's RFC raises the limit for its command (AUTH: 12288,
   * RFC 4954 section 4); it applies to no other command.
   */
  readonly maxLineLength?: number;
  /** Answer the command. Return `undefined` only if the reply was already sent through `ctx.send`. */
  handler(ctx: VerbContext): MaybePromise<Reply | undefined>;
}

export interface ParamContext {
  readonly session: Session;
  /** The transaction being opened (MAIL: `from` is not set yet) or extended (RCPT). */
  readonly tx: Transaction;
  /** RCPT only: attributes of the recipient being added, to be stored with it. */
  readonly recipient: RecipientAttributes | undefined;
}

export interface ParamDefinition {
  /** Upper-case keyword, e.g. `SIZE`. */
  readonly name: string;
  readonly command: 'MAIL' | 'RCPT';
  /**
   * Octets this parameter may add to a MAIL or RCPT line, as its extension's
   * RFC states (e.g. SIZE: 26, RFC 1870 section 4). A line that carries the
   * parameter may be that much longer than `limits.maxLineLength`; other lines
   * may not. Default 0.
   */
  readonly lineLength?: number;
  /** Validate and record the value. Return a reply to refuse the whole command. */
  handler(value: string | true, ctx: ParamContext): Reply | undefined;
}

/** Server-side TLS settings, published by a TLS plugin as the `tls` service. */
export interface TlsProvider {
  /** Options for a server-side TLS socket (certificates, SNI, minimum version). */
  serverOptions(): SecureContextOptions & { readonly SNICallback?: SniCallback };
}

/**
 * Services plugins publish for other plugins, keyed by name (extend by
 * declaration merging). The core itself consults only `tls`, for listeners
 * with implicit TLS.
 */
export interface Services {
  tls: TlsProvider;
}

export interface Clock {
  now(): number;
}

/** Read-only facts about the server a plugin runs in. */
export interface ServerFacts {
  readonly hostname: string;
  readonly limits: Readonly<Limits>;
  /** Directory for the server's own state (queue, spool); plugins keep data under it. */
  readonly dataDir: string;
  /** The server's DNS resolver (see `DnsResolver`): configured by the core `dns` settings, injectable in tests. */
  readonly dns: DnsResolver;
  readonly clock: Clock;
  /** Live state of the server, for health checks, metrics and admin tools (read-only). */
  readonly status: ServerStatus;
  /** Uniform numbers in [0, 1) for sampling decisions (e.g. DMARC `pct`); `Math.random` unless injected (tests). */
  readonly random: () => number;
}

/** Per plugin and hook: taps called, failed (451 or skipped), timed out and faults raised later, since start. */
export interface HookMetric {
  readonly plugin: string;
  readonly hook: string;
  readonly calls: number;
  readonly failures: number;
  readonly timeouts: number;
  /** Faults raised outside the hook call by code the plugin started there (only with `catchFaults`). */
  readonly faults: number;
}

/** Counters of the SMTP side since the server was created. */
export interface TrafficCounters {
  /** Connections accepted (refused ones, over a connection limit, are not counted). */
  readonly connections: number;
  /** Messages answered with a queue id (2xx after the `queue` hook). */
  readonly messages: number;
  /** Octets of those messages, as received (before added header fields). */
  readonly bytes: number;
  /** Messages whose data arrived but that were refused (size, loop, a verdict, no queue). */
  readonly refused: number;
}

/** One loaded plugin instance, its validated config (defaults filled in) and the schema it was checked against. */
export interface PluginInstance {
  /** The instance name (`id` in config, or the plugin's name). */
  readonly id: string;
  /** The plugin's own name. */
  readonly plugin: string;
  readonly config: unknown;
  readonly schema: TSchema;
}

/**
 * What a running server says about itself (`api.server.status`). Every
 * member reads live state: it is no snapshot.
 */
export interface ServerStatus {
  /**
   * Every plugin registered and ran its `onStart` callbacks, and the listeners
   * are open; false before that and again once shutdown begins.
   */
  readonly ready: boolean;
  /** Graceful shutdown began. */
  readonly draining: boolean;
  /** Open SMTP sessions. */
  readonly connections: number;
  traffic(): TrafficCounters;
  hookMetrics(): HookMetric[];
  /** The effective core settings (validated, defaults filled in; `plugins[]` as written in the file). */
  readonly config: Readonly<CoreConfig>;
  /** The loaded plugin instances in load order, with their effective config. */
  plugins(): readonly PluginInstance[];
}

export interface Limits {
  maxConnections: number;
  maxConnectionsPerIp: number;
  maxErrors: number;
  maxRecipients: number;
  recipientOvershoot: number;
  maxMessageSize: number;
  /** Octets of the header section (the empty line after it included). */
  maxHeaderSize: number;
  /** Octets of one header field, continuation lines included. */
  maxHeaderFieldLength: number;
  /** `Received` fields a message may arrive with; more is a loop (RFC 5321 6.3). */
  maxReceivedHeaders: number;
  maxLineLength: number;
}

/**
 * The outbound side's calls into the hooks: a queue plugin hands a job to the
 * delivery plugins and announces results. Failures inside taps are isolated.
 */
export interface Outbound {
  /** Offer a job to the `deliver` taps; undefined when no delivery plugin claimed it. */
  deliver(job: DeliveryJob): Promise<DeliveryReport | Reply | undefined>;
  delivered(job: DeliveryJob, result: RecipientResult): Promise<void>;
  deferred(job: DeliveryJob, result: RecipientResult): Promise<void>;
  bounced(job: DeliveryJob, result: RecipientResult): Promise<void>;
}

/**
 * What a config reload did (`PluginApi.reload`, SIGHUP, an admin API's
 * `POST /api/reload`). Refused: nothing changed, and `errors` says why, one line
 * each (JSON pointers for invalid settings, like start-up; a plugin or setting
 * that cannot change at runtime by name).
 */
export type ReloadResult =
  | {
      readonly ok: true;
      /** The new generation's number (1 is the configuration the server started with). */
      readonly generation: number;
      /** Plugin instances by what the reload did to them. */
      readonly plugins: {
        readonly kept: readonly string[];
        readonly added: readonly string[];
        readonly replaced: readonly string[];
        readonly removed: readonly string[];
      };
      /** Listeners by name. */
      readonly listeners: {
        readonly kept: readonly string[];
        readonly opened: readonly string[];
        readonly closed: readonly string[];
      };
    }
  | { readonly ok: false; readonly errors: readonly string[] };

export interface PluginApi<C> {
  /** This plugin instance's name (its `id` in config, or its plugin name). */
  readonly name: string;
  readonly config: C;
  readonly hooks: HookTaps;
  readonly log: Logger;
  readonly server: ServerFacts;
  registerVerb(def: VerbDefinition): void;
  registerParam(def: ParamDefinition): void;
  /** Fire the outbound hooks (queue plugins). */
  readonly outbound: Outbound;
  provide<K extends keyof Services>(key: K, value: Services[K]): void;
  /**
   * A service another plugin provides, or undefined. Read it when needed rather
   * than once: after a config reload it is the newest configuration's.
   */
  service<K extends keyof Services>(key: K): Services[K] | undefined;
  /** Run once every plugin has registered (in load order), before listeners open. */
  onStart(fn: () => MaybePromise<void>): void;
  /**
   * Run on shutdown, in reverse load order; for an instance a config reload
   * replaced or removed, once the last session that used it has ended. Given
   * after the instance closed (a `register` that went on past its timeout), it
   * runs at once.
   */
  onClose(fn: () => MaybePromise<void>): void;
  /**
   * Watch sessions without taking part (see `ServerObserver`): connections,
   * replies, TLS, transaction ends, hook timings. Removed when the plugin closes.
   */
  observe(observer: ServerObserver): void;
  /**
   * Read the configuration again from where the server got it (the file of
   * `mailframe start`) and apply it, or refuse it and change nothing. Never
   * rejects; reloads run one at a time. See docs/operations.md, "Reload".
   */
  reload(): Promise<ReloadResult>;
}

export interface PluginDefinition<S extends TSchema = TSchema> {
  readonly name: string;
  /** One line shown in docs and errors. */
  readonly description?: string;
  /** TypeBox schema of the plugin's `config` (JSON Schema for ajv, TypeScript type, docs). */
  readonly schema: S;
  /** Plugins that must be loaded before this one. */
  readonly dependencies?: readonly string[];
  /**
   * The plugin keeps no state a second instance would conflict with (no
   * listening socket, no exclusive file, nothing other plugins hold on to), so
   * a config reload may replace it with a new instance when its settings
   * change, or drop it, while sessions begun before finish with the old one.
   * Without it, such a reload is refused ("restart needed"). An unchanged
   * plugin is always carried over, whatever this says.
   */
  readonly reloadable?: boolean;
  register(api: PluginApi<Static<S>>, config: Static<S>): MaybePromise<void>;
}

/** Declare a plugin; an identity function that gives full typing to `register`. */
export function definePlugin<S extends TSchema>(def: PluginDefinition<S>): PluginDefinition<S> {
  return def;
}
