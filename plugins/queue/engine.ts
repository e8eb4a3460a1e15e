/**
 * Puts a queue together around a storage backend: the job runner, the
 * scheduler, the control socket for the CLI, the published `queue` service
 * and an orderly shutdown. A backend plugin (queue-fs) opens its store and
 * calls `startQueue`.
 */
import type { PluginApi } from '../../core/plugin.ts';
import { type ControlServer, listenControl, removePidFile, writePidFile } from './control.ts';
import { createJobRunner } from './job-runner.ts';
import type { ResolvedQueueOptions } from './options.ts';
import { retryPolicyWarnings } from './retry.ts';
import { Scheduler } from './scheduler.ts';
import type { QueueService, QueueStore } from './types.ts';

export interface StartQueueOptions {
  readonly store: QueueStore;
  readonly options: ResolvedQueueOptions;
  /** Unix socket the CLI talks to (undefined: none). */
  readonly controlSocket: string | undefined;
  /** File holding this process's pid while it serves the queue. */
  readonly pidFile: string | undefined;
  /** How long shutdown waits for running deliveries, ms (default 5000). */
  readonly closeGrace?: number;
  /** Look for due jobs at least this often, ms: for stores other nodes write to. Default: only when due. */
  readonly pollInterval?: number;
}

export interface RunningQueue {
  readonly service: QueueService;
  readonly scheduler: Scheduler;
}

export async function startQueue(api: PluginApi<unknown>, opts: StartQueueOptions): Promise<RunningQueue> {
  const { store, options } = opts;
  for (const warning of retryPolicyWarnings(options.policy)) api.log.warn(warning);
  const run = createJobRunner({
    store,
    outbound: api.outbound,
    clock: api.server.clock,
    hostname: api.server.hostname,
    policy: options.policy,
    router: options.router,
    bounces: options.bounces,
    log: api.log,
    signer: () => api.service('dkimSigner'),
  });
  const scheduler = new Scheduler({
    store,
    clock: api.server.clock,
    concurrency: options.concurrency,
    perDestination: options.perDestination,
    run,
    log: api.log,
    ...(opts.pollInterval === undefined ? {} : { pollInterval: opts.pollInterval }),
  });
  store.onWake(() => scheduler.kick());
  const service: QueueService = Object.freeze({
    enqueue: (envelope, content) => store.enqueue(envelope, content),
    list: (filter) => store.list(filter),
    show: (id) => store.show(id),
    hold: (id) => store.hold(id),
    release: (id) => store.release(id),
    retryNow: (id) => store.retryNow(id),
    delete: (id) => store.delete(id),
    stats: () => store.stats(),
    content: (id) => store.content(id),
    check: () => store.check(),
    runDue: () => scheduler.runDue(),
  } satisfies QueueService);

  let control: ControlServer | undefined;
  try {
    if (opts.controlSocket) control = await listenControl(opts.controlSocket, service, api.log);
    if (opts.pidFile) await writePidFile(opts.pidFile);
  } catch (err) {
    await control?.close();
    await store.close();
    throw err;
  }
  api.provide('queue', service);
  api.onClose(async () => {
    await control?.close();
    await scheduler.close(opts.closeGrace ?? 5000);
    await store.close();
    if (opts.pidFile) await removePidFile(opts.pidFile);
  });
  // Offer the backlog only once every plugin (delivery plugins included) has registered.
  api.onStart(() => scheduler.kick());
  return { service, scheduler };
}
