/**
 * The embedded durable queue: one self-describing file per message, written
 * to `tmp/`, fsynced, renamed into `messages/`, the directory fsynced (one
 * fsync covers every rename that waits for it), and only then answered with
 * `250 2.0.0 Ok: queued as ID`. Per-recipient delivery state lives in a small
 * sidecar replaced atomically; the scheduler, retries, bounces and the control
 * socket come from the shared queue engine (`plugins/queue/`).
 */
import { join, resolve } from 'node:path';
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { Replies } from '../../core/reply.ts';
import { startQueue } from '../queue/engine.ts';
import { tapQueueIntake } from '../queue/intake.ts';
import { queueOptionProperties, resolveQueueOptions } from '../queue/options.ts';
import { FreeSpace } from './free-space.ts';
import { DEFAULT_MEMORY_CACHE, FsQueueStore } from './store.ts';

export const schema = Type.Object(
  {
    dir: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "Queue directory; relative paths resolve against the server's `dataDir` (default: `queue`).",
      }),
    ),
    fsync: Type.Boolean({
      default: true,
      description:
        'fsync each queue file and its directory before answering 250. Turning it off risks losing acknowledged mail on a crash (tests only).',
    }),
    journal: Type.Boolean({
      default: true,
      description:
        'Append messages of up to 256 KiB to a shared journal, so concurrent transactions share one durable write (group commit); a message gets a queue file of its own once deferred or held. Off: a queue file per message from the start.',
    }),
    memoryCache: Type.Integer({
      minimum: 0,
      default: DEFAULT_MEMORY_CACHE,
      description:
        'Octets of recently queued messages (each up to 256 KiB) kept in memory so their first delivery attempt reads no file; 0 turns it off.',
    }),
    minFree: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'Octets that must stay free on the queue and data directory file systems: below it (plus any SIZE= the client declared), MAIL gets 452 4.3.1 (Postfix `queue_minfree`). Default: 1.5 x `limits.maxMessageSize`; 0: no check.',
      }),
    ),
    controlSocket: Type.Boolean({
      default: true,
      description:
        'Listen on `<dir>/control.sock` so `mailframe queue` can manage the queue while the server runs.',
    }),
    ...queueOptionProperties,
  },
  { additionalProperties: false },
);

/** Where the queue of a server with data directory `dataDir` lives. */
export function queueDirOf(dataDir: string, dir: string | undefined): string {
  return resolve(dataDir, dir ?? 'queue');
}

function isOutOfSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export default definePlugin({
  name: 'queue-fs',
  description:
    'Durable message queue on the local file system (fsync before 250), with scheduler, retries and bounces.',
  schema,
  async register(api, config) {
    const options = resolveQueueOptions(config);
    const root = queueDirOf(api.server.dataDir, config.dir);
    const store = await FsQueueStore.open({
      root,
      fsync: config.fsync,
      memoryCache: config.memoryCache,
      journal: config.journal,
      clock: api.server.clock,
      log: api.log,
    });
    await startQueue(api, {
      store,
      options,
      controlSocket: config.controlSocket ? join(root, 'control.sock') : undefined,
      pidFile: join(root, 'server.pid'),
    });
    const minFree = config.minFree ?? Math.ceil(1.5 * api.server.limits.maxMessageSize);
    if (minFree > 0) {
      const space = new FreeSpace([root, api.server.dataDir], api.server.clock, (err) =>
        api.log.warn({ err }, 'cannot measure free space; taking mail until it can'),
      );
      // Synchronous while the last figure is fresh: this runs for every MAIL.
      api.hooks.mail.tap((tx) => {
        // SIZE= (RFC 1870) is parsed before the hook runs.
        const need = minFree + (tx.declaredSize ?? 0);
        const verdict = (free: number | undefined) => {
          if (free === undefined || free >= need) return undefined;
          tx.log.warn({ free, need }, 'refusing mail: too little free space for the queue');
          return Replies.insufficientStorage;
        };
        const free = space.available();
        return typeof free === 'object' ? free.then(verdict) : verdict(free);
      });
    }
    tapQueueIntake(api, store, (err) =>
      isOutOfSpace(err) ? Replies.insufficientStorage : Replies.localError,
    );
  },
});
