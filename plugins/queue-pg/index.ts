/**
 * The shared queue in PostgreSQL: several mailframe nodes behind one set of MX
 * records queue into one database and deliver from it. A message is answered
 * `250` only once the transaction that stores it has committed; due jobs are
 * leased with `FOR UPDATE SKIP LOCKED`, renewed while a delivery runs and taken
 * over by another node when a node dies; per-destination concurrency holds
 * across all nodes; LISTEN/NOTIFY wakes the other nodes. Scheduling, retries,
 * bounces and the CLI come from the shared queue engine (`plugins/queue/`).
 */
import { hostname } from 'node:os';
import type pg from 'pg';
import Type, { type Static } from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import type { Logger } from '../../core/types.ts';
import { requireDuration } from '../queue/duration.ts';
import { startQueue } from '../queue/engine.ts';
import { tapQueueIntake } from '../queue/intake.ts';
import { queueOptionProperties, resolveQueueOptions } from '../queue/options.ts';
import { PgQueueStore } from './store.ts';

export const schema = Type.Object(
  {
    connectionString: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PostgreSQL URL, e.g. `postgres://mailframe@db.example.com/mail`. The settings below, then the `PG*` environment variables (`PGHOST`, `PGPASSWORD`, ...), fill in what it leaves out.',
      }),
    ),
    host: Type.Optional(
      Type.String({ minLength: 1, description: 'Database host (or Unix socket directory).' }),
    ),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'Database port (5432).' })),
    database: Type.Optional(Type.String({ minLength: 1, description: 'Database name.' })),
    user: Type.Optional(Type.String({ minLength: 1, description: 'Database user.' })),
    password: Type.Optional(
      Type.String({ description: 'Database password (prefer the `PGPASSWORD` environment variable).' }),
    ),
    schema: Type.String({
      pattern: '^[a-z_][a-z0-9_]{0,62}$',
      default: 'mailframe',
      description:
        "Schema holding the queue's tables (created, and migrated, at start). Nodes sharing a queue use the same one.",
    }),
    poolSize: Type.Integer({
      minimum: 1,
      default: 10,
      description: 'Database connections this node keeps (one more listens for wake-ups).',
    }),
    nodeId: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description: "This node's name in lease rows and `queue show` (default: hostname and process id).",
      }),
    ),
    leaseDuration: Type.String({
      default: '60s',
      description:
        "How long a node's claim on a job lasts unless renewed (it is renewed every third of it while the delivery runs): after a node dies, its jobs are taken over this long after its last renewal.",
    }),
    migrate: Type.Boolean({
      default: true,
      description:
        'Apply schema migrations at start. Off: refuse to start unless the schema is current (apply them with `mailframe queue migrate`, e.g. as a user with more rights).',
    }),
    connectTimeout: Type.String({
      default: '10s',
      description:
        'Give up connecting to the database after this long: a message arriving while the database is unreachable gets `451 4.3.0`.',
    }),
    ...queueOptionProperties,
  },
  { additionalProperties: false },
);

export type QueuePgConfig = Static<typeof schema>;

/** node-postgres settings from the plugin's config. */
export function connectionOf(config: QueuePgConfig): pg.ClientConfig {
  return {
    ...(config.connectionString === undefined ? {} : { connectionString: config.connectionString }),
    ...(config.host === undefined ? {} : { host: config.host }),
    ...(config.port === undefined ? {} : { port: config.port }),
    ...(config.database === undefined ? {} : { database: config.database }),
    ...(config.user === undefined ? {} : { user: config.user }),
    ...(config.password === undefined ? {} : { password: config.password }),
    connectionTimeoutMillis: requireDuration(config.connectTimeout, 'connectTimeout'),
  };
}

/** Open the store a config describes (the plugin, and `mailframe queue` without a server). */
export function openStore(
  config: QueuePgConfig,
  env: {
    clock: { now(): number };
    log: Logger;
    listen?: boolean;
    migrate?: boolean;
    /** The scheduler's limits, when the store feeds one (see `PgQueueOptions.scheduling`). */
    scheduling?: { concurrency: number; perDestination: number };
  },
): Promise<PgQueueStore> {
  const leaseDuration = requireDuration(config.leaseDuration, 'leaseDuration');
  if (leaseDuration < 1000) throw new Error(`leaseDuration: ${config.leaseDuration} is shorter than 1s`);
  return PgQueueStore.open({
    connection: connectionOf(config),
    poolSize: config.poolSize,
    schema: config.schema,
    nodeId: config.nodeId ?? `${hostname()}-${process.pid}`,
    leaseDuration,
    clock: env.clock,
    log: env.log,
    migrate: env.migrate ?? config.migrate,
    ...(env.listen === undefined ? {} : { listen: env.listen }),
    ...(env.scheduling === undefined ? {} : { scheduling: env.scheduling }),
  });
}

export default definePlugin({
  name: 'queue-pg',
  description:
    'Message queue in PostgreSQL shared by several nodes (commit before 250), with scheduler, retries, bounces.',
  schema,
  async register(api, config) {
    const options = resolveQueueOptions(config);
    const store = await openStore(config, {
      clock: api.server.clock,
      log: api.log,
      scheduling: { concurrency: options.concurrency, perDestination: options.perDestination },
    });
    const leaseDuration = requireDuration(config.leaseDuration, 'leaseDuration');
    await startQueue(api, {
      store,
      options,
      controlSocket: undefined,
      pidFile: undefined,
      // Wake-ups come by NOTIFY; this long fallback catches a lease left by a dead node at a full destination.
      pollInterval: leaseDuration,
    });
    tapQueueIntake(api, store);
  },
});
