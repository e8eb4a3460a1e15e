/**
 * CHUNKING (RFC 3030): the BDAT verb, which sends the message in counted
 * chunks instead of through DATA. Chunk octets are stored exactly as sent (no
 * dot-unstuffing, no end marker); the message goes through the core's chunked
 * message seam, so the same spool, `message` and `queue` hooks as DATA apply.
 *
 * Also publishes the `chunking` service: with `binaryMime`, the 8bitmime plugin
 * advertises BINARYMIME and accepts BODY=BINARYMIME, and this plugin refuses
 * DATA for such a transaction (RFC 3030 section 3).
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin, type VerbContext } from '../../core/plugin.ts';
import { Replies, type Reply, reply } from '../../core/reply.ts';
import type { Transaction } from '../../core/types.ts';
import { parseBdatArgument } from './bdat-argument.ts';
import type { ChunkingService } from './service.ts';

export type { ChunkingService } from './service.ts';

export const schema = Type.Object(
  {
    binaryMime: Type.Boolean({
      default: true,
      description:
        'Offer BINARYMIME (RFC 3030 section 3). Takes effect with the 8bitmime plugin, which owns the BODY parameter.',
    }),
  },
  { additionalProperties: false },
);

const badSyntax = reply(501, '5.5.4', 'Syntax: BDAT <size> [LAST]');
/**
 * Without a readable size the end of the chunk is unknown, and reading on would
 * take message content for commands: the command gets its syntax error, then
 * the connection is closed, announced by a 421 as RFC 5321 section 3.8 asks
 * (the 421 answers whatever the client sent next, which is never read).
 */
const closingAfterBadSize = reply(421, '4.5.0', 'Cannot find the end of the chunk; closing connection', true);
const dataAfterBdat = reply(503, '5.5.1', 'DATA not allowed after BDAT');
const binaryNeedsBdat = reply(503, '5.5.1', 'BODY=BINARYMIME requires BDAT');

export default definePlugin({
  name: 'chunking',
  description: 'RFC 3030 CHUNKING: the BDAT command (and BINARYMIME with the 8bitmime plugin).',
  schema,
  register(api, config) {
    /** Transactions that used BDAT: DATA is refused in them (RFC 3030 section 2). */
    const usedBdat = new WeakSet<Transaction>();
    /** Transactions whose chunked message is being opened by BDAT right now. */
    const opening = new WeakSet<Transaction>();
    /**
     * A BDAT failed in this transaction: every later chunk is read, discarded and
     * answered with the same reply until RSET (RFC 3030 section 2).
     */
    const failed = new WeakMap<Transaction, Reply>();

    const service: ChunkingService = { binaryMime: config.binaryMime };
    api.provide('chunking', service);

    api.hooks.capabilities.tap((keywords) => {
      keywords.push('CHUNKING');
      return keywords;
    });

    // The data hook runs for DATA and for the first BDAT of a message.
    api.hooks.data.tap(
      (tx) => {
        if (opening.has(tx)) return undefined;
        if (usedBdat.has(tx)) return dataAfterBdat;
        if (tx.attributes.body === 'BINARYMIME') return binaryNeedsBdat;
        return undefined;
      },
      { stage: Stage.FIRST },
    );

    /** Read the chunk into nothing and answer `r`. */
    const discard = async (ctx: VerbContext, size: number, r: Reply): Promise<Reply> => {
      await ctx.chunks.read(size);
      return r;
    };

    /** Open the message (the first chunk runs the `data` hook); a reply means refused. */
    const begin = async (ctx: VerbContext, tx: Transaction): Promise<Reply | undefined> => {
      opening.add(tx);
      try {
        return await ctx.chunks.begin();
      } finally {
        opening.delete(tx);
      }
    };

    api.registerVerb({
      name: 'BDAT',
      // Checked in the handler instead, so the chunk is always consumed.
      requiresHelo: false,
      async handler(ctx) {
        const arg = parseBdatArgument(ctx.argument);
        if (arg.kind === 'no-size') {
          ctx.send(badSyntax);
          return closingAfterBadSize;
        }
        const { session } = ctx;
        if (!session.helo) return discard(ctx, arg.size, Replies.needHelo);
        const tx = session.transaction;
        if (!tx) return discard(ctx, arg.size, Replies.needMail);
        usedBdat.add(tx);
        const earlier = failed.get(tx);
        if (earlier) return discard(ctx, arg.size, earlier);
        if (arg.kind === 'bad-marker') {
          failed.set(tx, badSyntax);
          await ctx.chunks.abort();
          return discard(ctx, arg.size, badSyntax);
        }
        const refused = await begin(ctx, tx);
        if (refused) {
          failed.set(tx, refused);
          return discard(ctx, arg.size, refused);
        }
        await ctx.chunks.read(arg.size);
        if (!arg.last) return reply(250, '2.0.0', `${arg.size} octets received`);
        return ctx.chunks.finish();
      },
    });
  },
});
