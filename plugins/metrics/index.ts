/**
 * Prometheus metrics on a listener of their own (default
 * `http://127.0.0.1:9725/metrics`): sessions, transactions, replies, messages
 * and octets received, hook timings and failures per plugin, TLS, AUTH, the
 * queue at scrape time, delivery results and delays, policy results. Every
 * metric is listed in `catalogue.ts` (and so in docs/operations.md).
 *
 * It watches the SMTP side through the core's observers (`api.observe`) and
 * the outbound side through the `delivered`/`deferred`/`bounced` hooks; the
 * queue's figures come from the `queue` service's `stats()` when scraped.
 * One prom-client `Registry` per plugin instance, never the global one.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';
import Type, { type Static } from 'typebox';
import { definePlugin, type HookMetric } from '../../core/plugin.ts';
import type { DeliveryJob, RecipientResult } from '../../core/types.ts';
import '../policy/policy.ts';
import { METRICS } from './catalogue.ts';
import { HistogramSeries, Series } from './series.ts';

export const schema = Type.Object(
  {
    host: Type.String({ default: '127.0.0.1', description: 'Address the HTTP listener binds to.' }),
    port: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 9725,
      description: 'Port of the HTTP listener (0: any free port, for tests).',
    }),
    path: Type.String({ default: '/metrics', pattern: '^/', description: 'Path Prometheus scrapes.' }),
    hookTimings: Type.Boolean({
      default: true,
      description:
        'Time the taps that answer with a promise (`mailframe_hook_duration_seconds`): two clock reads per such call; synchronous answers are never timed.',
    }),
    processMetrics: Type.Boolean({
      default: true,
      description: "prom-client's process and Node.js metrics (CPU, memory, event loop lag, GC, handles).",
    }),
    queueDestinations: Type.Integer({
      minimum: 0,
      maximum: 10,
      default: 10,
      description:
        'Destinations with the most pending recipients shown by `mailframe_queue_destination_recipients_pending`.',
    }),
    maxDestinations: Type.Integer({
      minimum: 1,
      default: 100,
      description:
        'Distinct `destination` label values of the delivery metrics; results for destinations beyond them count as `other` (bounds the series a scrape returns).',
    }),
  },
  { additionalProperties: false },
);

export type MetricsConfig = Static<typeof schema>;

interface ListenerCells {
  readonly open: { value: number };
  readonly connections: { value: number };
  readonly messages: { value: number };
  readonly bytes: { value: number };
  readonly authOk: { value: number };
  readonly authFailed: { value: number };
  readonly outcomes: Map<string, { value: number }>;
}

/** The `metrics` service: where the endpoint listens, and the exposition text (admin API, tests). */
export interface MetricsService {
  /** Address and port of the HTTP listener (undefined before start). */
  address(): { readonly host: string; readonly port: number } | undefined;
  /** The registry's exposition text, as a scrape would get it. */
  text(): Promise<string>;
  readonly contentType: string;
}

declare module '../../core/plugin.ts' {
  interface Services {
    metrics: MetricsService;
  }
}

/** Seconds: from a fast table lookup to a slow DNS or content scan. */
const HOOK_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
/** Seconds from receipt to a final delivery result: a second to the five days of a bounce. */
const DELAY_BUCKETS = [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 5 * 86400];

export default definePlugin({
  name: 'metrics',
  description: 'Prometheus metrics (prom-client) on a listener of their own.',
  schema,
  register(api, config) {
    const registry = new Registry();
    if (config.processMetrics) collectDefaultMetrics({ register: registry });
    const m = {
      connectionsOpen: new Series(METRICS.connectionsOpen, registry),
      connections: new Series(METRICS.connections, registry),
      transactions: new Series(METRICS.transactions, registry),
      replies: new Series(METRICS.replies, registry),
      messages: new Series(METRICS.messages, registry),
      bytes: new Series(METRICS.bytes, registry),
      hookDuration: new HistogramSeries(METRICS.hookDuration, registry, HOOK_BUCKETS),
      tls: new Series(METRICS.tls, registry),
      auth: new Series(METRICS.auth, registry),
      deliveries: new Series(METRICS.deliveries, registry),
      deliveryDelay: new HistogramSeries(METRICS.deliveryDelay, registry, DELAY_BUCKETS),
      policy: new Series(METRICS.policy, registry),
    };
    registerHookCounters(registry, () => api.server.status.hookMetrics());
    registerQueueGauges(
      registry,
      () => api.service('queue'),
      config.queueDestinations,
      () => api.server.clock.now(),
    );

    // The SMTP path's series, cached by their label values in small maps (no key strings built per event).
    const perListener = new Map<string, ListenerCells>();
    const listenerCells = (name: string): ListenerCells => {
      let c = perListener.get(name);
      if (!c) {
        c = {
          open: m.connectionsOpen.cell(name),
          connections: m.connections.cell(name),
          messages: m.messages.cell(name),
          bytes: m.bytes.cell(name),
          authOk: m.auth.cell(name, 'success'),
          authFailed: m.auth.cell(name, 'failure'),
          outcomes: new Map(),
        };
        perListener.set(name, c);
      }
      return c;
    };
    const replyCells = new Map<number, Map<string, { value: number }>>();
    const replyCell = (code: number, enhanced: string): { value: number } => {
      let byEnhanced = replyCells.get(code);
      if (!byEnhanced) {
        byEnhanced = new Map();
        replyCells.set(code, byEnhanced);
      }
      let cell = byEnhanced.get(enhanced);
      if (!cell) {
        cell = m.replies.cell(`${Math.floor(code / 100)}xx`, String(code), enhanced);
        byEnhanced.set(enhanced, cell);
      }
      return cell;
    };

    const hookCells = new Map<string, Map<string, ReturnType<typeof m.hookDuration.cell>>>();
    // Sessions counted open: one begun before this instance (added by a config reload) ends uncounted.
    const counted = new WeakSet<object>();

    api.observe({
      connection(session, event) {
        const c = listenerCells(session.listener.name);
        if (event === 'open') {
          counted.add(session);
          c.connections.value++;
          c.open.value++;
        } else if (counted.delete(session)) c.open.value--;
      },
      reply(session, r, verb) {
        const code = r.code;
        replyCell(code, r.enhanced ?? '').value++;
        if (verb === 'AUTH' && (code === 235 || code >= 400)) {
          const c = listenerCells(session.listener.name);
          (code === 235 ? c.authOk : c.authFailed).value++;
        }
      },
      tls(session, info) {
        m.tls.add(1, session.listener.name, info.protocol, info.cipher);
      },
      transaction(tx, end) {
        const name = tx.session.listener.name;
        const c = listenerCells(name);
        let outcome = c.outcomes.get(end.outcome);
        if (!outcome) {
          outcome = m.transactions.cell(name, end.outcome);
          c.outcomes.set(end.outcome, outcome);
        }
        outcome.value++;
        if (end.outcome === 'queued') {
          c.messages.value++;
          c.bytes.value += end.size ?? 0;
        }
        const policy = tx.notes.policy;
        if (policy) for (const r of policy.results) m.policy.add(1, r.check, r.result.result);
      },
      ...(config.hookTimings
        ? {
            hook(plugin: string, hook: string, seconds: number) {
              let byHook = hookCells.get(plugin);
              if (!byHook) {
                byHook = new Map();
                hookCells.set(plugin, byHook);
              }
              let cell = byHook.get(hook);
              if (!cell) {
                cell = m.hookDuration.cell(plugin, hook);
                byHook.set(hook, cell);
              }
              m.hookDuration.observe(cell, seconds);
            },
          }
        : {}),
    });

    const destinations = new Set<string>();
    const destinationLabel = (d: string): string => {
      if (destinations.has(d)) return d;
      if (destinations.size >= config.maxDestinations) return 'other';
      destinations.add(d);
      return d;
    };
    const delivery =
      (outcome: 'delivered' | 'deferred' | 'bounced') => (job: DeliveryJob, _r: RecipientResult) => {
        const destination = destinationLabel(job.destination);
        m.deliveries.add(1, destination, outcome);
        if (outcome !== 'deferred' && job.receivedAt !== undefined) {
          const seconds = Math.max(0, (api.server.clock.now() - job.receivedAt) / 1000);
          m.deliveryDelay.observe(m.deliveryDelay.cell(destination, outcome), seconds);
        }
      };
    api.hooks.delivered.tap(delivery('delivered'));
    api.hooks.deferred.tap(delivery('deferred'));
    api.hooks.bounced.tap(delivery('bounced'));

    let http: Server | undefined;
    api.provide('metrics', {
      address() {
        const a = http?.address() as AddressInfo | null | undefined;
        return a ? { host: a.address, port: a.port } : undefined;
      },
      text: () => registry.metrics(),
      contentType: registry.contentType,
    });
    api.onStart(async () => {
      const server = createServer((req, res) => {
        const url = new URL(req.url ?? '/', 'http://metrics');
        if (url.pathname !== config.path) {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
          return;
        }
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          res
            .writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' })
            .end('method not allowed\n');
          return;
        }
        registry.metrics().then(
          (text) =>
            res
              .writeHead(200, { 'content-type': registry.contentType })
              .end(req.method === 'HEAD' ? '' : text),
          (err: unknown) => {
            api.log.error({ err }, 'metrics scrape failed');
            res.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed\n');
          },
        );
      });
      await new Promise<void>((ok, fail) => {
        server.once('error', fail);
        server.listen({ host: config.host, port: config.port }, () => {
          server.off('error', fail);
          ok();
        });
      });
      server.on('error', (err) => api.log.error({ err }, 'metrics listener error'));
      http = server;
      const a = server.address() as AddressInfo;
      api.log.info({ address: `${a.address}:${a.port}`, path: config.path }, 'metrics listening');
    });
    api.onClose(async () => {
      const server = http;
      http = undefined;
      if (!server) return;
      server.closeAllConnections();
      await new Promise<void>((ok) => server.close(() => ok()));
    });
  },
});

/** Hook counters read from the server's own (`server.hookMetrics()`) at scrape time: nothing on the SMTP path. */
function registerHookCounters(registry: Registry, read: () => readonly HookMetric[]): void {
  const series = {
    calls: new Series(METRICS.hookCalls, registry, async () => refresh()),
    failures: new Series(METRICS.hookFailures, registry, async () => refresh()),
    timeouts: new Series(METRICS.hookTimeouts, registry, async () => refresh()),
    faults: new Series(METRICS.hookFaults, registry, async () => refresh()),
  };
  const refresh = () => {
    for (const s of Object.values(series)) s.clear();
    // One entry per plugin id: the server counts every instance of an id (reloads) together.
    for (const h of read()) {
      series.calls.add(h.calls, h.plugin, h.hook);
      series.failures.add(h.failures, h.plugin, h.hook);
      series.timeouts.add(h.timeouts, h.plugin, h.hook);
      series.faults.add(h.faults, h.plugin, h.hook);
    }
  };
}

/** Gauges read from the queue service's `stats()` at scrape time (absent without a queue). */
function registerQueueGauges(
  registry: Registry,
  queue: () => { stats(): Promise<import('../queue/types.ts').QueueStats> } | undefined,
  top: number,
  now: () => number,
): void {
  // prom-client reads every metric's get() at once per scrape: the first of these reads the stats for all six.
  let reading: Promise<void> | undefined;
  const before = () => {
    reading ??= refresh().finally(() => {
      reading = undefined;
    });
    return reading;
  };
  const messages = new Series(METRICS.queueMessages, registry, before);
  const active = new Series(METRICS.queueActive, registry, before);
  const pending = new Series(METRICS.queuePending, registry, before);
  const bytes = new Series(METRICS.queueBytes, registry, before);
  const oldest = new Series(METRICS.queueOldest, registry, before);
  const byDestination = new Series(METRICS.queueDestinations, registry, before);
  const refresh = async () => {
    for (const s of [messages, active, pending, bytes, oldest, byDestination]) s.clear();
    const stats = await queue()
      ?.stats()
      .catch(() => undefined);
    if (!stats) return;
    messages.set(stats.messages, 'all');
    messages.set(stats.deferred, 'deferred');
    messages.set(stats.held, 'held');
    messages.set(stats.quarantined, 'quarantined');
    active.set(stats.active);
    pending.set(stats.recipients.pending);
    bytes.set(stats.bytes);
    oldest.set(
      stats.oldestReceivedAt === undefined ? 0 : Math.max(0, (now() - stats.oldestReceivedAt) / 1000),
    );
    for (const d of stats.destinations.slice(0, top)) byDestination.set(d.pending, d.destination);
  };
}
