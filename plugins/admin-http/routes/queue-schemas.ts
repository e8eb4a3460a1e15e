/** TypeBox schemas of the queue's management types (`plugins/queue/types.ts`) as the admin API sends them. */
import Type from 'typebox';

export const QueueStateSchema = Type.Union(
  [Type.Literal('active'), Type.Literal('deferred'), Type.Literal('held'), Type.Literal('quarantined')],
  {
    description:
      '`active`: being delivered now; `deferred`: tried at least once; `held`: kept but not scheduled; `quarantined`: set apart by a policy action until released.',
  },
);

const Open = Type.Record(Type.String(), Type.Unknown());

export const ReplyRecordSchema = Type.Object({
  code: Type.Integer(),
  enhanced: Type.Optional(Type.String()),
  text: Type.String(),
});

export const QueueSummarySchema = Type.Object({
  id: Type.String(),
  from: Type.String({ description: "Reverse-path; '' for the null reverse-path (bounces)." }),
  receivedAt: Type.Number({ description: 'ms since the epoch' }),
  size: Type.Integer(),
  state: Type.String({ description: 'active, deferred, held, quarantined or queued (not tried yet).' }),
  recipients: Type.Integer(),
  pending: Type.Integer({ description: 'Recipients still to be delivered.' }),
  attempts: Type.Integer({ description: 'Most attempts made for any pending recipient.' }),
  nextAttemptAt: Type.Optional(Type.Number()),
  lastReply: Type.Optional(ReplyRecordSchema),
  quarantine: Type.Optional(
    Type.Object(
      { check: Type.String(), result: Type.String() },
      { description: 'Set while a policy action keeps the message in quarantine: the check and its result.' },
    ),
  ),
});

export const RecipientDetailSchema = Type.Object({
  address: Type.String(),
  domain: Type.String(),
  attributes: Open,
  status: Type.String({ description: 'pending, delivered or failed.' }),
  attempts: Type.Integer(),
  nextAttemptAt: Type.Number(),
  lastAttemptAt: Type.Optional(Type.Number()),
  reply: Type.Optional(ReplyRecordSchema),
  mta: Type.Optional(Type.String()),
  mtaAddress: Type.Optional(Type.String()),
  warned: Type.Optional(Type.Boolean()),
});

export const QueueDetailSchema = Type.Object({
  ...QueueSummarySchema.properties,
  attributes: Open,
  source: Type.Optional(Open),
  recipientStates: Type.Array(RecipientDetailSchema, {
    description: 'Per recipient: state and last attempt.',
  }),
  headers: Type.String({ description: 'The header section (at most 64 KiB).' }),
});

export const QueueStatsSchema = Type.Object({
  messages: Type.Integer(),
  held: Type.Integer(),
  quarantined: Type.Optional(Type.Integer({ description: 'With a queue that quarantines messages.' })),
  deferred: Type.Integer(),
  active: Type.Integer(),
  recipients: Type.Object({ pending: Type.Integer() }),
  bytes: Type.Integer(),
  oldestReceivedAt: Type.Optional(Type.Number()),
  nextAttemptAt: Type.Optional(Type.Number()),
  destinations: Type.Array(Type.Object({ destination: Type.String(), pending: Type.Integer() })),
});

/** Which messages a list or a bulk action applies to. */
export const FilterProperties = {
  state: Type.Optional(QueueStateSchema),
  search: Type.Optional(
    Type.String({ minLength: 1, maxLength: 320, description: 'Substring of the sender or a recipient.' }),
  ),
  destination: Type.Optional(
    Type.String({ minLength: 1, maxLength: 255, description: 'Domain with a pending recipient.' }),
  ),
};
