/** mailframe's public API: what plugin authors and embedders import. */
export { parseMailbox, parsePath } from './address.ts';
export type { CoreConfig, DnsConfig, ListenerConfig, PluginEntry } from './config-schema.ts';
export { CoreConfigSchema } from './config-schema.ts';
export type {
  DnsErrorReason,
  DnsRecordType,
  DnsRecordTypes,
  DnsResolver,
  DnsResult,
} from './dns/types.ts';
export { type ErrorCode, Errors, MailframeError } from './errors.ts';
export type { BailHookName, HookName, Hooks, ParallelHookName, Verdict, WaterfallHookName } from './hooks.ts';
export { isReply, Stage } from './hooks.ts';
export { createLogger, silentLogger } from './log.ts';
export type {
  HookOutcome,
  ServerObserver,
  TransactionEnd,
  TransactionOutcome,
} from './observers.ts';
export type {
  BailTap,
  ChunkedMessage,
  Clock,
  HookMetric,
  HookTaps,
  Limits,
  Outbound,
  ParallelTap,
  ParamContext,
  ParamDefinition,
  PluginApi,
  PluginDefinition,
  PluginInstance,
  ReloadResult,
  ServerFacts,
  ServerStatus,
  Services,
  TapOptions,
  TlsProvider,
  TrafficCounters,
  VerbContext,
  VerbDefinition,
  WaterfallTap,
} from './plugin.ts';
export { definePlugin } from './plugin.ts';
export { isPermanent, isPositive, isTransient, queuedReply, Replies, type Reply, reply } from './reply.ts';
export { createServer, type ListeningAddress, MailServer, type ServerOptions } from './server.ts';
export type * from './types.ts';
