/** Plugin and hook health: per plugin, its hooks' calls, failures, timeouts and faults. */
import Type from 'typebox';
import { defineRoute } from '../route.ts';

const Counts = {
  calls: Type.Integer(),
  failures: Type.Integer(),
  timeouts: Type.Integer(),
  faults: Type.Integer(),
};

const Plugins = Type.Object(
  {
    ready: Type.Boolean(),
    plugins: Type.Array(
      Type.Object({
        id: Type.String(),
        plugin: Type.String(),
        healthy: Type.Boolean({ description: 'No failure, timeout or fault since start.' }),
        ...Counts,
        hooks: Type.Array(Type.Object({ hook: Type.String(), ...Counts })),
      }),
      { description: 'In load order.' },
    ),
  },
  { additionalProperties: false },
);

export const pluginRoutes = [
  defineRoute({
    method: 'GET',
    url: '/api/plugins',
    summary: 'Loaded plugins in load order, with the health of their hooks since start.',
    response: { 200: Plugins },
    handle: async (_input, _reply, ctx) => {
      const metrics = ctx.status.hookMetrics();
      return {
        ready: ctx.status.ready,
        plugins: ctx.status.plugins().map((p) => {
          const hooks = metrics
            .filter((m) => m.plugin === p.id)
            .map(({ hook, calls, failures, timeouts, faults }) => ({
              hook,
              calls,
              failures,
              timeouts,
              faults,
            }));
          const sum = (k: 'calls' | 'failures' | 'timeouts' | 'faults') =>
            hooks.reduce((n, h) => n + h[k], 0);
          const failures = sum('failures');
          const timeouts = sum('timeouts');
          const faults = sum('faults');
          return {
            id: p.id,
            plugin: p.plugin,
            healthy: failures + timeouts + faults === 0,
            calls: sum('calls'),
            failures,
            timeouts,
            faults,
            hooks,
          };
        }),
      };
    },
  }),
];
