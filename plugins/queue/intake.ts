/**
 * What every queue backend's `queue` hook stores: the envelope of an SMTP
 * transaction and the message octets (from memory when small, else a stream).
 */
import { Stage } from '../../core/hooks.ts';
import type { PluginApi } from '../../core/plugin.ts';
import { Replies, type Reply } from '../../core/reply.ts';
import type { Message, Transaction } from '../../core/types.ts';
import type { EnvelopeInput, MessageContent, QueueStore } from './types.ts';

/** The envelope of an SMTP transaction as the queue stores it. */
export function envelopeOf(tx: Transaction, hostname: string, now: number): EnvelopeInput {
  const s = tx.session;
  const host = hostname.toLowerCase();
  return {
    from: tx.from.address?.address ?? '',
    recipients: tx.recipients.map((r) => {
      const a = r.address;
      // <Postmaster> without a domain means this host's postmaster (RFC 5321 4.5.1).
      if (a.domain === '')
        return { address: `${a.localPart}@${host}`, domain: host, attributes: r.attributes };
      return { address: a.address, domain: a.asciiDomain.toLowerCase(), attributes: r.attributes };
    }),
    attributes: tx.attributes,
    receivedAt: now,
    source: {
      kind: 'smtp',
      client: s.remote.address,
      tid: tx.id,
      ...(s.helo ? { helo: s.helo.domain } : {}),
      ...(s.user === undefined ? {} : { user: s.user }),
    },
  };
}

/** Messages up to this many octets are queued from memory with one write; larger ones stream. */
export const IN_MEMORY_LIMIT = 256 * 1024;

/** The message as the queue stores it: prepended header fields, then the data. */
export function contentOf(message: Message): Promise<MessageContent> {
  let size = message.size;
  for (const field of message.prepended) size += Buffer.byteLength(field, 'utf8') + 2;
  if (size <= IN_MEMORY_LIMIT) return message.read(IN_MEMORY_LIMIT);
  return Promise.resolve({ size, stream: () => message.stream() });
}

/**
 * A backend's `queue` tap: store the transaction's message in `store` and
 * answer with its queue id, or with `failed(err)`'s reply (default `451
 * 4.3.0`) when the store could not take it.
 */
export function tapQueueIntake(
  api: Pick<PluginApi<unknown>, 'hooks' | 'server'>,
  store: Pick<QueueStore, 'enqueue'>,
  failed: (err: unknown) => Reply = () => Replies.localError,
): void {
  // Promise chains rather than async frames: this runs once per message, with the 250 waiting.
  api.hooks.queue.tap(
    (tx, message) => {
      const envelope = envelopeOf(tx, api.server.hostname, api.server.clock.now());
      return contentOf(message)
        .then((content) => store.enqueue(envelope, content))
        .then(
          (id) => ({ id }),
          (err: unknown) => {
            tx.log.error({ err }, 'queue write failed');
            return failed(err);
          },
        );
    },
    { stage: Stage.LATE },
  );
}
