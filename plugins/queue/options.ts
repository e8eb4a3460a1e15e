/**
 * Settings every queue backend shares (scheduling, retries, routing, bounces),
 * as TypeBox properties a backend spreads into its schema, and their parsing
 * into the values the engine uses. Parse errors name the setting, so a bad
 * schedule stops start-up with a clear message.
 */
import Type, { type Static } from 'typebox';
import type { BounceOptions } from './job-runner.ts';
import { DEFAULT_MAX_AGE, DEFAULT_RETRY, parseRetryPolicy, type RetryPolicy } from './retry.ts';
import { compileRoutes, type Router } from './routes.ts';

export const RouteSchema = Type.Object(
  {
    domains: Type.Union([Type.Literal('*'), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })], {
      description: 'Destination domains: `example.com`, `*.example.com` (subdomains), or `"*"` for all.',
    }),
    via: Type.String({
      minLength: 1,
      description: 'Delivery plugin instance (its `id`, or its name) that gets these jobs as `job.route`.',
    }),
  },
  { additionalProperties: false },
);

export const queueOptionProperties = {
  concurrency: Type.Integer({
    minimum: 1,
    default: 20,
    description: 'Delivery jobs running at once.',
  }),
  perDestination: Type.Integer({
    minimum: 1,
    default: 5,
    description: 'Delivery jobs running at once for one destination domain.',
  }),
  retry: Type.String({
    default: DEFAULT_RETRY,
    description:
      'Delays between attempts, e.g. `5m, 30m, 1h, 2h, 4h...`; `...` repeats the last one. Without it, the schedule ends and the next failure is final.',
  }),
  maxAge: Type.String({
    default: DEFAULT_MAX_AGE,
    description: 'Give up (and bounce) once a message is this old (RFC 5321 4.5.4.1: at least 4-5 days).',
  }),
  delayWarning: Type.Optional(
    Type.String({
      description:
        'Send a DELAY notification (RFC 3464) once a message has waited this long, e.g. `4h`, to senders whose NOTIFY allows it. Absent: none.',
    }),
  ),
  routes: Type.Array(RouteSchema, {
    default: [],
    description: 'Routing table: the first rule whose domains match a destination names its delivery plugin.',
  }),
  bounceReturn: Type.Union([Type.Literal('headers'), Type.Literal('full')], {
    default: 'headers',
    description:
      'What a bounce returns when the sender gave no `RET`: the header section or the whole message.',
  }),
  bounceMaxReturnSize: Type.Integer({
    minimum: 0,
    default: 262144,
    description: 'Messages larger than this (octets) are returned as headers only, even with `RET=FULL`.',
  }),
};

const OptionsSchema = Type.Object(queueOptionProperties);
export type QueueOptions = Static<typeof OptionsSchema>;

export interface ResolvedQueueOptions {
  readonly concurrency: number;
  readonly perDestination: number;
  readonly policy: RetryPolicy;
  readonly router: Router;
  readonly bounces: BounceOptions;
}

/** Parse the shared settings; throws an Error naming the setting. */
export function resolveQueueOptions(config: QueueOptions): ResolvedQueueOptions {
  return {
    concurrency: config.concurrency,
    perDestination: config.perDestination,
    policy: parseRetryPolicy({
      retry: config.retry,
      maxAge: config.maxAge,
      delayWarning: config.delayWarning,
    }),
    router: compileRoutes(config.routes),
    bounces: { returnContent: config.bounceReturn, maxReturnSize: config.bounceMaxReturnSize },
  };
}
