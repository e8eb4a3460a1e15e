/** Answers the queue hook and throws the message away: for benchmarks and tests only. */
import { randomBytes } from 'node:crypto';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';

export const schema = Type.Object({}, { additionalProperties: false });

export default definePlugin({
  name: 'queue-discard',
  description: 'Accepts and discards every message (benchmarks only: mail is lost).',
  schema,
  register(api) {
    api.log.warn('queue-discard is loaded: accepted messages are thrown away');
    const prefix = randomBytes(3).toString('hex');
    let seq = 0;
    api.hooks.queue.tap(() => ({ id: `discard-${prefix}${(++seq).toString(36)}` }), { stage: Stage.LAST });
  },
});
