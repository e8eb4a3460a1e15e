/**
 * The shared policy state of a server (greylist triplets, rate-limit
 * buckets): in memory, written behind to an embedded SQLite database under
 * `dataDir`, published as the
 * `policyState` service that `greylist` and `rate-limit` use. One instance
 * per server; a database-backed store (several nodes on one PostgreSQL)
 * publishes the same service instead.
 */
import { isAbsolute, join } from 'node:path';
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { servePolicyState } from '../policy/state-store.ts';
import { requireDuration } from '../queue/duration.ts';
import { SqlitePolicyStore } from './sqlite-store.ts';

export const schema = Type.Object(
  {
    path: Type.String({
      minLength: 1,
      default: 'policy-state.sqlite',
      description:
        'The SQLite database file, relative to `dataDir` (or absolute). Created with mode 0600; its `-wal` file sits beside it. One process owns it.',
    }),
    flushInterval: Type.String({
      default: '1s',
      description:
        'How often changed entries are written to the database (they are kept in memory). A crash loses at most this much; a restart nothing.',
    }),
    pruneInterval: Type.String({
      default: '10m',
      description:
        'How often expired greylist entries and refilled rate-limit buckets are deleted (`30s`, `10m`, `1h`).',
    }),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'policy-store',
  description: 'Shared state for greylist and rate-limit: in memory, written behind to SQLite under dataDir.',
  schema,
  register(api, config) {
    const every = requireDuration(config.pruneInterval, 'pruneInterval');
    const path = isAbsolute(config.path) ? config.path : join(api.server.dataDir, config.path);
    const flushIntervalMs = requireDuration(config.flushInterval, 'flushInterval');
    if (flushIntervalMs < 10) throw new Error(`flushInterval: "${config.flushInterval}" is under 10ms`);
    const store = new SqlitePolicyStore({
      path,
      flushIntervalMs,
      onFlushError: (err) => api.log.warn({ err }, 'policy state write failed; will retry'),
    });
    servePolicyState(api, store, every);
  },
});
