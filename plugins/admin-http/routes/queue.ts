/** The queue: list with filters and paging, show, the message itself, hold/release/retry/delete, bulk actions. */
import type { FastifyReply } from 'fastify';
import Type from 'typebox';
import type { QueueFilter, QueueManagement, QueueService } from '../../queue/types.ts';
import { type AdminContext, defineRoute, ErrorBody, sendError } from '../route.ts';
import { FilterProperties, QueueDetailSchema, QueueSummarySchema } from './queue-schemas.ts';

const MAX_PAGE = 500;
/** A bulk action by filter touches at most this many messages per request. */
export const MAX_BULK = 10_000;

/** Queue ids are short runs of letters, digits and `._-` (queue-fs: base 36). */
const QueueId = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9._-]+$',
  description: 'Queue id.',
});

const IdParams = Type.Object({ id: QueueId }, { additionalProperties: false });

const ListQuery = Type.Object(
  {
    ...FilterProperties,
    limit: Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 50, description: 'Page size.' }),
    offset: Type.Integer({ minimum: 0, default: 0, description: 'Matching messages to skip.' }),
  },
  { additionalProperties: false },
);

const ListBody = Type.Object(
  {
    messages: Type.Array(QueueSummarySchema),
    offset: Type.Integer(),
    limit: Type.Integer(),
    nextOffset: Type.Union([Type.Integer(), Type.Null()], {
      description: 'The `offset` of the next page; null on the last one.',
    }),
  },
  { additionalProperties: false },
);

const ActionName = Type.Union([
  Type.Literal('hold'),
  Type.Literal('release'),
  Type.Literal('retry'),
  Type.Literal('delete'),
]);
type ActionName = 'hold' | 'release' | 'retry' | 'delete';

const ActionResult = Type.Object(
  { id: Type.String(), action: ActionName, done: Type.Literal(true) },
  { additionalProperties: false },
);

const BulkBody = Type.Object(
  {
    action: ActionName,
    ids: Type.Optional(
      Type.Array(QueueId, {
        minItems: 1,
        maxItems: 1000,
        description: 'These messages.',
      }),
    ),
    filter: Type.Optional(
      Type.Object(FilterProperties, {
        additionalProperties: false,
        description: `Every message matching (at least one criterion; at most ${MAX_BULK}).`,
      }),
    ),
  },
  { additionalProperties: false, description: 'Exactly one of `ids` and `filter`.' },
);

const BulkResult = Type.Object(
  {
    action: ActionName,
    matched: Type.Integer({ description: 'Messages the ids or filter named.' }),
    done: Type.Array(Type.String(), { description: 'Ids the action was applied to.' }),
    notFound: Type.Array(Type.String(), { description: 'Ids no longer (or never) in the queue.' }),
  },
  { additionalProperties: false },
);

function run(queue: QueueManagement, action: ActionName, id: string): Promise<boolean> {
  switch (action) {
    case 'hold':
      return queue.hold(id);
    case 'release':
      return queue.release(id);
    case 'retry':
      return queue.retryNow(id);
    case 'delete':
      return queue.delete(id);
  }
}

/** The queue service, or a 503 answer when no queue plugin is loaded. */
function queueOr503(ctx: AdminContext, reply: FastifyReply): QueueService | undefined {
  const q = ctx.queue();
  if (!q) sendError(reply, 503, 'unavailable', 'no queue plugin is loaded');
  return q;
}

function filterOf(f: { state?: QueueFilter['state']; search?: string; destination?: string }): QueueFilter {
  return {
    ...(f.state === undefined ? {} : { state: f.state }),
    ...(f.search === undefined ? {} : { search: f.search }),
    ...(f.destination === undefined ? {} : { destination: f.destination }),
  };
}

const notFound = (reply: FastifyReply, id: string) =>
  sendError(reply, 404, 'not-found', `no message ${id} in the queue`);

/** One message's action: `POST /api/queue/:id/<action>`, and `DELETE /api/queue/:id` for delete. */
function actionRoute(action: ActionName, summary: string) {
  return defineRoute({
    method: action === 'delete' ? 'DELETE' : 'POST',
    url: action === 'delete' ? '/api/queue/:id' : `/api/queue/:id/${action}`,
    summary,
    params: IdParams,
    response: { 200: ActionResult, 404: ErrorBody, 503: ErrorBody },
    handle: async ({ params, caller }, reply, ctx) => {
      const q = queueOr503(ctx, reply);
      if (!q) return reply;
      if (!(await run(q, action, params.id))) return notFound(reply, params.id);
      ctx.log.info({ op: action, qid: params.id, token: caller }, 'admin queue action');
      return { id: params.id, action, done: true };
    },
  });
}

export const queueRoutes = [
  defineRoute({
    method: 'GET',
    url: '/api/queue',
    summary: 'Queued messages, oldest first, filtered and paged.',
    query: ListQuery,
    response: { 200: ListBody, 503: ErrorBody },
    handle: async ({ query }, reply, ctx) => {
      const q = queueOr503(ctx, reply);
      if (!q) return reply;
      // One more than asked for tells whether there is a next page.
      const found = await q.list({ ...filterOf(query), offset: query.offset, limit: query.limit + 1 });
      const more = found.length > query.limit;
      return {
        messages: more ? found.slice(0, query.limit) : found,
        offset: query.offset,
        limit: query.limit,
        nextOffset: more ? query.offset + query.limit : null,
      };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/api/queue/:id',
    summary:
      'One message: envelope, source, header section, and each recipient with its attempts and last reply.',
    params: IdParams,
    response: { 200: QueueDetailSchema, 404: ErrorBody, 503: ErrorBody },
    handle: async ({ params }, reply, ctx) => {
      const q = queueOr503(ctx, reply);
      if (!q) return reply;
      return (await q.show(params.id)) ?? notFound(reply, params.id);
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/api/queue/:id/message',
    summary: 'The whole message as stored (headers and body), streamed as `message/rfc822`.',
    produces: 'message/rfc822',
    params: IdParams,
    response: { 404: ErrorBody, 503: ErrorBody },
    handle: async ({ params, caller }, reply, ctx) => {
      const q = queueOr503(ctx, reply);
      if (!q) return reply;
      const content = await q.content(params.id);
      if (!content) return notFound(reply, params.id);
      ctx.log.info({ op: 'read', qid: params.id, token: caller }, 'admin read a queued message');
      return reply
        .header('content-type', 'message/rfc822')
        .header('content-length', content.size)
        .header('content-disposition', `inline; filename="${params.id}.eml"`)
        .send(content.stream());
    },
  }),
  actionRoute('hold', 'Keep the message but stop scheduling it.'),
  actionRoute(
    'release',
    'Schedule a held or quarantined message again (a quarantined one is then delivered).',
  ),
  actionRoute('retry', 'Make every pending recipient due now.'),
  actionRoute('delete', 'Remove the message without delivering or bouncing it.'),
  defineRoute({
    method: 'POST',
    url: '/api/queue/bulk',
    summary: 'Hold, release, retry or delete many messages: by ids, or every message matching a filter.',
    body: BulkBody,
    response: { 200: BulkResult, 400: ErrorBody, 503: ErrorBody },
    handle: async ({ body, caller }, reply, ctx) => {
      const q = queueOr503(ctx, reply);
      if (!q) return reply;
      if ((body.ids === undefined) === (body.filter === undefined))
        return sendError(reply, 400, 'bad-request', 'give exactly one of "ids" and "filter"');
      let ids: string[];
      if (body.filter) {
        const filter = filterOf(body.filter);
        if (Object.keys(filter).length === 0)
          return sendError(reply, 400, 'bad-request', 'an empty filter would match every message');
        ids = (await q.list({ ...filter, limit: MAX_BULK })).map((m) => m.id);
      } else {
        ids = [...new Set(body.ids)];
      }
      const done: string[] = [];
      const notFoundIds: string[] = [];
      for (const id of ids) ((await run(q, body.action, id)) ? done : notFoundIds).push(id);
      ctx.log.info(
        { op: body.action, bulk: true, messages: done.length, token: caller },
        'admin bulk queue action',
      );
      return { action: body.action, matched: ids.length, done, notFound: notFoundIds };
    },
  }),
];
