/** Live counters: connections, messages, hook metrics, the queue's numbers. */
import Type from 'typebox';
import { defineRoute } from '../route.ts';
import { QueueStatsSchema } from './queue-schemas.ts';

export const HookMetricSchema = Type.Object({
  plugin: Type.String(),
  hook: Type.String(),
  calls: Type.Integer(),
  failures: Type.Integer({ description: 'Taps that threw (answered 451) or were skipped.' }),
  timeouts: Type.Integer(),
  faults: Type.Integer({ description: 'Errors raised later by code the tap started.' }),
});

const Stats = Type.Object(
  {
    at: Type.Number({ description: 'Server clock, ms since the epoch: rates are deltas between two reads.' }),
    ready: Type.Boolean(),
    draining: Type.Boolean(),
    connections: Type.Object({
      open: Type.Integer(),
      total: Type.Integer({ description: 'Accepted since start.' }),
    }),
    messages: Type.Object({
      accepted: Type.Integer({ description: 'Answered with a queue id since start.' }),
      refused: Type.Integer({ description: 'Whose data arrived but were refused.' }),
      bytes: Type.Integer({ description: 'Octets of the accepted ones.' }),
    }),
    hooks: Type.Array(HookMetricSchema),
    queue: Type.Union([QueueStatsSchema, Type.Null()], { description: 'null without a queue plugin.' }),
  },
  { additionalProperties: false },
);

export const statsRoutes = [
  defineRoute({
    method: 'GET',
    url: '/api/stats',
    summary: 'Live counters: connections, messages and octets since start, hook metrics, queue statistics.',
    response: { 200: Stats },
    handle: async (_input, _reply, ctx) => {
      const s = ctx.status;
      const t = s.traffic();
      const queue = ctx.queue();
      return {
        at: ctx.now(),
        ready: s.ready,
        draining: s.draining,
        connections: { open: s.connections, total: t.connections },
        messages: { accepted: t.messages, refused: t.refused, bytes: t.bytes },
        hooks: s.hookMetrics(),
        queue: queue ? await queue.stats() : null,
      };
    },
  }),
];
