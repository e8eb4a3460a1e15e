/** Reload the configuration file (the same as SIGHUP to `mailframe start`). */
import Type from 'typebox';
import { defineRoute } from '../route.ts';

const Names = Type.Array(Type.String());

const Applied = Type.Object(
  {
    ok: Type.Literal(true),
    generation: Type.Integer({
      description: 'The new configuration generation (1: the one the server started with).',
    }),
    plugins: Type.Object(
      { kept: Names, added: Names, replaced: Names, removed: Names },
      { description: 'Plugin instances by what the reload did to them.' },
    ),
    listeners: Type.Object(
      { kept: Names, opened: Names, closed: Names },
      { description: 'Listeners by name.' },
    ),
  },
  { additionalProperties: false },
);

const Refused = Type.Object(
  {
    ok: Type.Literal(false),
    errors: Type.Array(Type.String(), {
      description:
        'Every reason, one each: invalid settings by JSON pointer, what cannot change without a restart.',
    }),
  },
  { additionalProperties: false },
);

export const reloadRoutes = [
  defineRoute({
    method: 'POST',
    url: '/api/reload',
    summary:
      'Read the configuration file again and apply it without dropping sessions (200), or refuse it and change nothing (422, with every reason).',
    response: { 200: Applied, 422: Refused },
    handle: async (input, reply, ctx) => {
      ctx.log.info({ caller: input.caller }, 'admin API: reload requested');
      const result = await ctx.reload();
      if (!result.ok) reply.code(422);
      return result;
    },
  }),
];
