/** Liveness and readiness, for load balancers and Kubernetes probes (no token needed). */
import Type from 'typebox';
import { describe } from '../../../core/errors.ts';
import { defineRoute } from '../route.ts';

const Health = Type.Object({ status: Type.Literal('ok') }, { additionalProperties: false });

const Check = Type.Object(
  {
    ok: Type.Boolean(),
    detail: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

const Readiness = Type.Object(
  {
    ready: Type.Boolean(),
    checks: Type.Object(
      {
        started: Check,
        queue: Check,
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

export const healthRoutes = [
  defineRoute({
    method: 'GET',
    url: '/healthz',
    summary: 'Liveness: the process answers. No token.',
    auth: false,
    response: { 200: Health },
    handle: async () => ({ status: 'ok' }),
  }),
  defineRoute({
    method: 'GET',
    url: '/readyz',
    summary:
      'Readiness: 200 when every plugin started, the SMTP listeners are open and the queue store answers; 503 otherwise. No token.',
    auth: false,
    response: { 200: Readiness, 503: Readiness },
    handle: async (_input, reply, ctx) => {
      const { ready, draining } = ctx.status;
      const started = ready
        ? { ok: true }
        : { ok: false, detail: draining ? 'shutting down' : 'starting: plugins or listeners not up yet' };
      const service = ctx.queue();
      let queue: { ok: boolean; detail?: string } = { ok: true, detail: 'no queue plugin loaded' };
      if (service) {
        try {
          await service.check();
          queue = { ok: true };
        } catch (err) {
          queue = { ok: false, detail: describe(err) };
        }
      }
      const ok = started.ok && queue.ok;
      return reply.code(ok ? 200 : 503).send({ ready: ok, checks: { started, queue } });
    },
  }),
];
