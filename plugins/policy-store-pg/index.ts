/**
 * The shared policy state (greylist triplets, rate-limit buckets) in
 * PostgreSQL, for several nodes on one database: publishes the
 * `policyState` service, as `policy-store` does for one node. Its
 * connection settings are queue-pg's (same names, same defaults), and its
 * tables sit in queue-pg's schema unless told otherwise.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { servePolicyState } from '../policy/state-store.ts';
import { requireDuration } from '../queue/duration.ts';
import { schema as queuePgSchema } from '../queue-pg/index.ts';
import { PgPolicyStore } from './pg-store.ts';

const q = queuePgSchema.properties;

export const schema = Type.Object(
  {
    connectionString: q.connectionString,
    host: q.host,
    port: q.port,
    database: q.database,
    user: q.user,
    password: q.password,
    schema: Type.String({
      pattern: '^[a-z_][a-z0-9_]{0,62}$',
      default: 'mailframe',
      description:
        "Schema holding the tables `policy_greylist` and `policy_bucket` (queue-pg's by default). Nodes sharing state use the same one.",
    }),
    poolSize: Type.Integer({
      minimum: 1,
      default: 4,
      description: 'Database connections this node keeps for policy state (one per operation in flight).',
    }),
    migrate: Type.Boolean({
      default: true,
      description:
        'Create or upgrade the tables at start. Off: refuse to start unless they are current (their version table is `policy_state_version`).',
    }),
    connectTimeout: Type.String({
      default: '10s',
      description:
        'Give up connecting to the database after this long: the greylist or rate-limit check then records `temperror` (accepted unless its `actions` say otherwise).',
    }),
    pruneInterval: Type.String({
      default: '10m',
      description:
        'How often expired greylist entries and refilled rate-limit buckets are deleted (`30s`, `10m`, `1h`). Every node prunes; a delete of what another node deleted costs nothing.',
    }),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'policy-store-pg',
  description:
    'Shared state for greylist and rate-limit in PostgreSQL, shared by every node on the database.',
  schema,
  async register(api, config) {
    const every = requireDuration(config.pruneInterval, 'pruneInterval');
    const store = await PgPolicyStore.open({
      connection: {
        ...(config.connectionString === undefined ? {} : { connectionString: config.connectionString }),
        ...(config.host === undefined ? {} : { host: config.host }),
        ...(config.port === undefined ? {} : { port: config.port }),
        ...(config.database === undefined ? {} : { database: config.database }),
        ...(config.user === undefined ? {} : { user: config.user }),
        ...(config.password === undefined ? {} : { password: config.password }),
        connectionTimeoutMillis: requireDuration(config.connectTimeout, 'connectTimeout'),
      },
      poolSize: config.poolSize,
      schema: config.schema,
      migrate: config.migrate,
      onPoolError: (err) => api.log.warn({ err }, 'PostgreSQL connection lost (the pool reconnects)'),
    });
    servePolicyState(api, store, every);
  },
});
