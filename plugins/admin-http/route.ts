/**
 * The admin API's route contract. Each route is a value: method, path, the
 * TypeBox schemas of its input and of each response, and a handler. Fastify
 * validates input against the schemas and serialises output through them
 * (what a schema does not name is never sent); `scripts/docs.ts` renders the
 * same values into the route table of docs/operations.md. A new endpoint is a
 * module exporting routes, listed once in `routes/index.ts`.
 */
import type { FastifyReply } from 'fastify';
import type { Static, TSchema } from 'typebox';
import Type from 'typebox';
import type { ReloadResult, ServerStatus } from '../../core/plugin.ts';
import type { Logger } from '../../core/types.ts';
import type { QueueService } from '../queue/types.ts';

/** What handlers reach: the server's live state and the queue service. */
export interface AdminContext {
  readonly status: ServerStatus;
  /** The `queue` service, looked up per request (undefined: no queue plugin loaded). */
  queue(): QueueService | undefined;
  readonly log: Logger;
  readonly now: () => number;
  /** Reload the configuration (`api.reload()`). */
  reload(): Promise<ReloadResult>;
}

export interface RouteInput<P, Q, B> {
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  /** The name of the token the request was authorised with (undefined on routes without auth). */
  readonly caller: string | undefined;
}

export type Method = 'GET' | 'POST' | 'DELETE';

export interface RouteSchemas {
  readonly params?: TSchema;
  readonly querystring?: TSchema;
  readonly body?: TSchema;
  /** By status code; also what the docs list. */
  readonly response: Readonly<Record<number, TSchema>>;
}

export interface AdminRoute {
  readonly method: Method;
  readonly url: string;
  /** One line for the docs. */
  readonly summary: string;
  /** Needs a bearer token (default true). */
  readonly auth: boolean;
  /** The response body is not JSON (e.g. a message streamed as `message/rfc822`). */
  readonly produces?: string;
  readonly schema: RouteSchemas;
  handle(
    input: RouteInput<unknown, unknown, unknown>,
    reply: FastifyReply,
    ctx: AdminContext,
  ): Promise<unknown>;
}

interface RouteDefinition<P extends TSchema, Q extends TSchema, B extends TSchema> {
  readonly method: Method;
  readonly url: string;
  readonly summary: string;
  readonly auth?: boolean;
  readonly produces?: string;
  readonly params?: P;
  readonly query?: Q;
  readonly body?: B;
  readonly response: Readonly<Record<number, TSchema>>;
  handle(
    input: RouteInput<Static<P>, Static<Q>, Static<B>>,
    reply: FastifyReply,
    ctx: AdminContext,
  ): Promise<unknown>;
}

/** Declare a route; gives its handler the types of its schemas (which Fastify has checked). */
export function defineRoute<
  P extends TSchema = TSchema,
  Q extends TSchema = TSchema,
  B extends TSchema = TSchema,
>(def: RouteDefinition<P, Q, B>): AdminRoute {
  const schema: { -readonly [K in keyof RouteSchemas]: RouteSchemas[K] } = { response: def.response };
  if (def.params) schema.params = def.params;
  if (def.query) schema.querystring = def.query;
  if (def.body) schema.body = def.body;
  return Object.freeze({
    method: def.method,
    url: def.url,
    summary: def.summary,
    auth: def.auth ?? true,
    ...(def.produces === undefined ? {} : { produces: def.produces }),
    schema: Object.freeze(schema),
    handle: def.handle as AdminRoute['handle'],
  });
}

/** The body of every error answer. */
export const ErrorBody = Type.Object(
  {
    error: Type.String({
      description: 'A stable code: unauthorized, not-found, bad-request, unavailable, internal.',
    }),
    message: Type.String(),
  },
  { additionalProperties: false },
);

export type ErrorCode = 'unauthorized' | 'not-found' | 'bad-request' | 'unavailable' | 'internal';

export function sendError(
  reply: FastifyReply,
  status: number,
  error: ErrorCode,
  message: string,
): FastifyReply {
  return reply.code(status).send({ error, message });
}
