/**
 * The embedded durable queue: one self-describing file per message, written
 * to `tmp/`, fsynced, renamed into `queue/`, the directory fsynced, and only
 * then answered with `250 2.0.0 Ok: queued as ID`.
 *
 * File format: the line `MAILFRAME-QUEUE 1`, one line of envelope JSON, then
 * the message exactly as it will be delivered (see docs/plugins/queue-fs.md).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { Replies } from '../../core/reply.ts';
import type { Message, Transaction } from '../../core/types.ts';

export const schema = Type.Object(
  {
    dir: Type.Optional(
      Type.String({
        description: 'Queue directory (default: `<dataDir>/queue`), relative to the working directory.',
      }),
    ),
    fsync: Type.Boolean({
      default: true,
      description:
        'fsync file and directory before answering 250. Turning it off risks losing mail on a crash.',
    }),
  },
  { additionalProperties: false },
);

export const QUEUE_MAGIC = 'MAILFRAME-QUEUE 1';

/** The envelope line of a queue file. */
export interface QueueEnvelope {
  readonly id: string;
  readonly from: string;
  readonly recipients: ReadonlyArray<{
    readonly address: string;
    readonly attributes: object;
    state: 'pending';
  }>;
  readonly attributes: object;
  readonly receivedAt: string;
  readonly client: { readonly address: string; readonly helo: string | undefined; readonly user?: string };
}

export function envelopeOf(id: string, tx: Transaction, now: number): QueueEnvelope {
  const s = tx.session;
  return {
    id,
    from: tx.from.address?.address ?? '',
    recipients: tx.recipients.map((r) => ({
      address: r.address.address,
      attributes: r.attributes,
      state: 'pending',
    })),
    attributes: tx.attributes,
    receivedAt: new Date(now).toISOString(),
    client: {
      address: s.remote.address,
      helo: s.helo?.domain,
      ...(s.user === undefined ? {} : { user: s.user }),
    },
  };
}

export function newQueueId(): string {
  return Date.now().toString(36) + randomBytes(5).toString('hex');
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function writeQueueFile(
  dirs: { tmp: string; queue: string },
  envelope: QueueEnvelope,
  message: Message,
  fsync: boolean,
): Promise<string> {
  const tmp = join(dirs.tmp, envelope.id);
  const final = join(dirs.queue, envelope.id);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.write(`${QUEUE_MAGIC}\n${JSON.stringify(envelope)}\n`);
    await pipeline(message.stream(), fh.createWriteStream({ autoClose: false }));
    if (fsync) await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  await rename(tmp, final);
  if (fsync) await fsyncDir(dirs.queue);
  return final;
}

export default definePlugin({
  name: 'queue-fs',
  description: 'Durable message queue on the local file system (fsync before 250).',
  schema,
  async register(api, config) {
    const root = config.dir ?? join(api.server.dataDir, 'queue');
    const dirs = { tmp: join(root, 'tmp'), queue: join(root, 'messages') };
    await mkdir(dirs.tmp, { recursive: true, mode: 0o700 });
    await mkdir(dirs.queue, { recursive: true, mode: 0o700 });
    // A crash can leave half-written files in tmp/: they were never answered 250.
    for (const name of await readdir(dirs.tmp)) await unlink(join(dirs.tmp, name)).catch(() => {});
    api.hooks.queue.tap(
      async (tx, message) => {
        const id = newQueueId();
        try {
          await writeQueueFile(dirs, envelopeOf(id, tx, api.server.clock.now()), message, config.fsync);
        } catch (err) {
          tx.log.error({ err }, 'queue write failed');
          return Replies.insufficientStorage;
        }
        return { id };
      },
      { stage: Stage.LATE },
    );
  },
});
