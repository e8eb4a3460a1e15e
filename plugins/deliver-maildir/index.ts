/**
 * Final delivery into Maildir folders (one file per message and recipient),
 * with `Return-Path` and `Delivered-To` prepended. Each recipient succeeds or
 * fails on its own.
 */
import { join, resolve } from 'node:path';
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { type Reply, reply } from '../../core/reply.ts';
import type { DeliveryJob, RecipientResult } from '../../core/types.ts';
import { claims, domainMatcher } from '../outbound/routing.ts';
import { DeliveryRecords } from './delivery-records.ts';
import { crlfToLf } from './line-endings.ts';
import { MailboxResolver } from './mailbox-path.ts';
import { MaildirWriter } from './maildir-writer.ts';

export const schema = Type.Object(
  {
    root: Type.String({
      minLength: 1,
      description:
        'Directory every Maildir lives under; a relative path resolves against the server `dataDir`.',
    }),
    layout: Type.String({
      minLength: 1,
      default: '{domain}/{local}/Maildir',
      description:
        'Path of a Maildir relative to `root`: `{domain}`, `{local}` (whole local part), `{user}` (local part before `+`), all lower-cased and sanitised; the result must stay inside `root`.',
    }),
    mailboxes: Type.Optional(
      Type.Record(Type.String({ minLength: 1 }), Type.String({ minLength: 1 }), {
        description:
          'Address (case-insensitive) to Maildir directory (relative to `root`, or absolute). When set, only these addresses have mailboxes and `layout` is not used.',
      }),
    ),
    createMissing: Type.Boolean({
      default: true,
      description: 'Create a missing Maildir (tmp, new, cur); when false a missing one is 550 5.1.1.',
    }),
    domains: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description:
        'Recipient domains delivered here when the queue did not route the job: `example.com`, `*.example.com` or `*`. Empty: only jobs routed to this plugin.',
    }),
    lineEndings: Type.Union([Type.Literal('lf'), Type.Literal('crlf')], {
      default: 'lf',
      description:
        'Line endings in the stored files: `lf` (the Maildir convention; BINARYMIME messages are stored unchanged) or `crlf` (the octets as received).',
    }),
    fsync: Type.Boolean({
      default: true,
      description: 'fsync each file and the `new` directory before reporting delivered.',
    }),
    recordDays: Type.Integer({
      minimum: 1,
      default: 7,
      description:
        "Days the record of each delivery (under `dataDir`, to recognise a repeat after a crash without listing the Maildir) is kept; at least the queue's `maxAge`.",
    }),
  },
  { additionalProperties: false },
);

/** The reply for a file-system error while delivering (never the error text). */
export function replyForFsError(err: unknown): Reply {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC') return reply(452, '4.3.1', 'Insufficient system storage');
  if (code === 'EDQUOT') return reply(452, '4.2.2', 'Mailbox full');
  return reply(451, '4.3.0', 'Local error delivering to the mailbox');
}

const DELIVERED = reply(250, '2.0.0', 'Delivered to Maildir');
const NO_MAILBOX = reply(550, '5.1.1', 'No such mailbox');
const BAD_ADDRESS = reply(550, '5.1.3', 'Address does not name a usable mailbox');

const headerSafe = (s: string): string => s.replace(/[\x00-\x1f\x7f]/g, '');

export default definePlugin({
  name: 'deliver-maildir',
  description: 'Delivers to Maildir folders on the local file system, one result per recipient.',
  schema,
  async register(api, config) {
    const resolver = new MailboxResolver({
      root: resolve(api.server.dataDir, config.root),
      layout: config.layout,
      ...(config.mailboxes ? { mailboxes: config.mailboxes } : {}),
    });
    const records = new DeliveryRecords({
      dir: join(api.server.dataDir, api.name, 'delivered'),
      fsync: config.fsync,
      keepMs: config.recordDays * 24 * 60 * 60 * 1000,
      now: () => api.server.clock.now(),
    });
    // Messages that arrive from now on have a record of their delivery.
    await records.since();
    const writer = new MaildirWriter({
      hostname: api.server.hostname,
      fsync: config.fsync,
      now: () => api.server.clock.now(),
      records,
    });
    const matches = domainMatcher(config.domains);
    // Jobs for messages queued before this point may repeat a delivery of the run before.
    const startedAt = api.server.clock.now();
    const mta = api.server.hostname;

    const result = (recipient: string, r: Reply): RecipientResult => ({
      recipient,
      status: r.code < 400 ? 'delivered' : r.code < 500 ? 'deferred' : 'failed',
      reply: { code: r.code, ...(r.enhanced ? { enhanced: r.enhanced } : {}), text: String(r.text) },
      mta,
    });

    const deliverOne = async (job: DeliveryJob, address: string): Promise<Reply> => {
      const found = resolver.lookup(address, job.destination);
      if (found.kind === 'unknown') return NO_MAILBOX;
      if (found.kind === 'invalid') return BAD_ADDRESS;
      const body: unknown = job.attributes.body;
      const lf =
        config.lineEndings === 'lf' && !(typeof body === 'string' && body.toUpperCase() === 'BINARYMIME');
      const eol = lf ? '\n' : '\r\n';
      try {
        if (!(await writer.exists(found.dir))) {
          if (!config.createMissing) return NO_MAILBOX;
          await writer.create(found.dir);
        }
        const swept = await writer.sweep(found.dir);
        if (swept > 0)
          job.log.info({ dir: found.dir, files: swept }, 'removed abandoned files from Maildir tmp/');
        const head = Buffer.from(
          `Return-Path: <${headerSafe(job.from)}>${eol}Delivered-To: ${headerSafe(address)}${eol}`,
          'utf8',
        );
        const body = () => {
          const source = job.stream() as AsyncIterable<Buffer>;
          return lf ? crlfToLf(source) : source;
        };
        // A retry, or a message from before this start: an earlier attempt may have got as far as new/.
        const mayRepeat = job.attempts > 0 || job.receivedAt === undefined || job.receivedAt < startedAt;
        const done = await writer.deliver(
          found.dir,
          head,
          body,
          { queueId: job.id, recipient: address },
          mayRepeat && { receivedAt: job.receivedAt },
        );
        if (done.earlier)
          job.log.info(
            { recipient: address, file: done.file },
            'already in the Maildir from an earlier attempt',
          );
        else job.log.debug({ recipient: address, file: done.file }, 'delivered to Maildir');
        return DELIVERED;
      } catch (err) {
        job.log.error({ recipient: address, err }, 'Maildir delivery failed');
        return replyForFsError(err);
      }
    };

    api.hooks.deliver.tap(async (job) => {
      if (!claims(api.name, matches, job)) return undefined;
      const results: RecipientResult[] = [];
      for (const r of job.recipients) results.push(result(r.address, await deliverOne(job, r.address)));
      return { results };
    });
  },
});
