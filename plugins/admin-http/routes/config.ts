/** The effective configuration, secrets redacted (see redact.ts). */
import Type from 'typebox';
import { CoreConfigSchema } from '../../../core/config-schema.ts';
import { redact } from '../redact.ts';
import { defineRoute } from '../route.ts';

const Config = Type.Object(
  {
    core: Type.Record(Type.String(), Type.Unknown(), {
      description: 'Core settings with defaults filled in (`plugins` left out: see below).',
    }),
    plugins: Type.Array(
      Type.Object({
        id: Type.String(),
        plugin: Type.String(),
        config: Type.Unknown({ description: "The plugin's validated settings, defaults filled in." }),
      }),
      { description: 'In load order.' },
    ),
  },
  { additionalProperties: false },
);

export const configRoutes = [
  defineRoute({
    method: 'GET',
    url: '/api/config',
    summary: 'The effective configuration (defaults filled in), secrets replaced by "[redacted]".',
    response: { 200: Config },
    handle: async (_input, _reply, ctx) => {
      const { plugins: _entries, ...core } = ctx.status.config;
      return {
        core: redact(core, CoreConfigSchema),
        plugins: ctx.status.plugins().map((p) => ({
          id: p.id,
          plugin: p.plugin,
          config: redact(p.config, p.schema),
        })),
      };
    },
  }),
];
