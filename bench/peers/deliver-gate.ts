/**
 * Bench-only gate in front of the delivery plugins (the outbound bench's
 * "hold the whole queue, then release it"): while `releaseFile` does not
 * exist, every job the queue starts waits here; once it appears (checked every
 * few ms), the waiting jobs and every later one go on to the next `deliver`
 * tap, the real delivery plugin. Removing the file closes the gate again for
 * jobs that start after that. So the bench queues all its messages first and
 * then measures delivery alone, as it does for Postfix with `postsuper -H
 * ALL`. Load it before the delivery plugin, with a per-plugin `timeout`
 * longer than the queueing takes.
 */
import { existsSync } from 'node:fs';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';

const POLL_MS = 5;

export default definePlugin({
  name: 'bench-delivery-gate',
  description: 'Holds every delivery job until a file appears, then lets them all through (benchmarks only).',
  schema: Type.Object(
    { releaseFile: Type.String({ minLength: 1, description: 'Delivery starts once this file exists.' }) },
    { additionalProperties: false },
  ),
  register(api, config) {
    let open = false;
    const waiting: (() => void)[] = [];
    const poll = () => {
      open = existsSync(config.releaseFile);
      if (open) for (const go of waiting.splice(0)) go();
    };
    // Polled, not watched: a stat every few ms is noise next to delivery, and needs no cleanup beyond a timer.
    const timer = setInterval(poll, POLL_MS);
    timer.unref();
    poll();
    api.onClose(() => {
      clearInterval(timer);
      open = true;
      for (const go of waiting.splice(0)) go();
    });
    api.hooks.deliver.tap(
      () => (open ? undefined : new Promise<undefined>((resolve) => waiting.push(() => resolve(undefined)))),
      { stage: Stage.FIRST },
    );
  },
});
