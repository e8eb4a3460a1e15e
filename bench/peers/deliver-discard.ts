/**
 * Bench-only delivery plugin for `mailframe-fs`: claims every job the queue
 * schedules and reports each recipient delivered without reading the message,
 * so a durable-queue run measures receive + fsync'd enqueue + the queue's own
 * bookkeeping (schedule, state update, removal) and nothing else. Mail is lost.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import type { RecipientResult } from '../../core/types.ts';

const DELIVERED = { code: 250, enhanced: '2.0.0', text: 'Discarded by the bench' } as const;

export default definePlugin({
  name: 'bench-deliver-discard',
  description: 'Reports every delivery job as delivered and throws the message away (benchmarks only).',
  schema: Type.Object({}, { additionalProperties: false }),
  register(api) {
    api.hooks.deliver.tap((job) => ({
      results: job.recipients.map(
        (r): RecipientResult => ({ recipient: r.address, status: 'delivered', reply: DELIVERED }),
      ),
    }));
  },
});
