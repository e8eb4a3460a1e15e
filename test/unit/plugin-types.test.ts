/**
 * Type tests for the plugin API: `npm run typecheck` fails if a plugin author
 * would lose completion or type safety. The runtime part only checks the
 * plugin registers.
 */
import Type from 'typebox';
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  type Address,
  definePlugin,
  type ForwardPath,
  type Message,
  type QueueResult,
  Replies,
  type Reply,
  type ReversePath,
  reply,
  type Session,
  Stage,
  type Transaction,
} from '../../core/index.ts';
import { startTestServer } from '../../core/testkit.ts';

declare module '../../core/types.ts' {
  interface TransactionNotes {
    typeTestScore?: number;
  }
}

const schema = Type.Object({
  domains: Type.Array(Type.String(), { default: [] }),
  threshold: Type.Optional(Type.Number()),
});

const plugin = definePlugin({
  name: 'type-test',
  schema,
  register(api, config) {
    expectTypeOf(config.domains).toEqualTypeOf<string[]>();
    expectTypeOf(config.threshold).toEqualTypeOf<number | undefined>();
    expectTypeOf(api.config).toEqualTypeOf(config);
    api.hooks.connect.tap((session) => {
      expectTypeOf(session).toEqualTypeOf<Session>();
      expectTypeOf(session.listener.protocol).toEqualTypeOf<'smtp' | 'lmtp'>();
      return undefined;
    });
    api.hooks.ehlo.tap((_session, helo) => {
      expectTypeOf(helo.verb).toEqualTypeOf<'EHLO' | 'HELO' | 'LHLO'>();
      return undefined;
    });
    api.hooks.mail.tap((tx, from) => {
      expectTypeOf(tx).toEqualTypeOf<Transaction>();
      expectTypeOf(from).toEqualTypeOf<ReversePath>();
      expectTypeOf(from.address).toEqualTypeOf<Address | null>();
      tx.notes.typeTestScore = 1;
      // @ts-expect-error notes only hold declared keys
      tx.notes.undeclared = 1;
      return undefined;
    });
    api.hooks.rcpt.tap(
      async (_tx, to) => {
        expectTypeOf(to).toEqualTypeOf<ForwardPath>();
        return to.address.asciiDomain === 'example.com' ? Replies.recipientOk : undefined;
      },
      { stage: Stage.EARLY },
    );
    // @ts-expect-error a verdict hook answers with a Reply or undefined, not a string
    api.hooks.data.tap(() => 'nope');
    // @ts-expect-error null would stop tapable's bail chain: it is not a verdict
    api.hooks.data.tap(() => null);
    api.hooks.queue.tap(async (_tx, message) => {
      expectTypeOf(message).toEqualTypeOf<Message>();
      return { id: 'x' } satisfies QueueResult;
    });
    api.hooks.capabilities.tap((keywords) => {
      expectTypeOf(keywords).toEqualTypeOf<string[]>();
      return keywords;
    });
    api.hooks.disconnect.tap((session) => {
      expectTypeOf(session).toEqualTypeOf<Session>();
    });
    const r = reply(550, '5.7.1', 'No');
    expectTypeOf(r).toEqualTypeOf<Reply>();
  },
});

describe('plugin API types', () => {
  it('a typed plugin registers and runs', async () => {
    const t = await startTestServer({ plugins: [[plugin, { domains: ['example.com'] }]] });
    try {
      const c = await t.connect();
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<a@b.example>', 250);
      await c.expect('RCPT TO:<x@example.com>', 250, '2.1.5');
      await c.close();
      expect(t.server.hooks.rcpt.taps.map((tap) => tap.name)).toContain('type-test');
    } finally {
      await t.close();
    }
  });
});
