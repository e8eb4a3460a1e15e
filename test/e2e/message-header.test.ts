/**
 * `messageHeader` of `mailframe/policy`: the header section parsed once and
 * kept on the transaction for the next check, as long as the message is
 * unchanged; a `prepend` or a `removeFields` makes the next call read the
 * message as it now stands. Over a real SMTP session, in `message` taps.
 */
import Type from 'typebox';
import { afterEach, describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { startTestServer, type TestServer } from '../../core/testkit.ts';
import { cachedMessageHeader, messageHeader, messageHeaderNow } from '../../plugins/policy/policy.ts';

interface Seen {
  first: string[];
  again: boolean;
  afterPrepend: string[] | undefined;
  afterRemove: string[] | undefined;
  large: boolean | undefined;
}

function probe(seen: Partial<Seen>) {
  return definePlugin({
    name: 'header-probe',
    schema: Type.Object({}),
    register(api) {
      api.hooks.message.tap(async (tx, message) => {
        const first = await messageHeader(tx, message);
        seen.first = first?.fields.map((f) => f.name) ?? [];
        seen.again =
          cachedMessageHeader(tx, message) === first && (await messageHeader(tx, message)) === first;
        message.prepend(['X-Probe: 1']);
        seen.afterPrepend = cachedMessageHeader(tx, message)?.fields.map((f) => f.name);
        const prepended = await messageHeader(tx, message);
        expect(prepended?.fields[0]?.raw).toBe('X-Probe: 1');
        await message.removeFields((name) => name === 'x-remove');
        seen.afterRemove = cachedMessageHeader(tx, message)?.fields.map((f) => f.name);
        const removed = await messageHeader(tx, message);
        expect(removed?.fields.map((f) => f.name)).not.toContain('x-remove');
        expect(removed?.buffer.subarray(removed.bodyStart).toString()).toBe('body\r\n');
        return undefined;
      });
    },
  });
}

describe('messageHeader', () => {
  let t: TestServer | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it('parses once per message, and again after prepend or removeFields', async () => {
    const seen: Partial<Seen> = {};
    t = await startTestServer({ plugins: [probe(seen), ['rcpt-local', { domains: ['example.com'] }]] });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@sender.example>', 250);
    await c.expect('RCPT TO:<user@example.com>', 250);
    await c.expect('DATA', 354);
    const r = await c.sendData('From: a@sender.example\r\nX-Remove: yes\r\nSubject: hi\r\n\r\nbody');
    expect(r.code).toBe(250);
    await c.expect('QUIT', 221);
    // The core's Received field comes first.
    expect(seen.first).toEqual(['received', 'from', 'x-remove', 'subject']);
    expect(seen.again).toBe(true);
    expect(seen.afterPrepend).toBeUndefined();
    expect(seen.afterRemove).toBeUndefined();
  });

  it('messageHeaderNow: a message held in memory parsed at once, without a promise, and kept for the next check', async () => {
    const seen: { now?: unknown; same?: boolean; read?: boolean | undefined } = {};
    const now = definePlugin({
      name: 'now-probe',
      schema: Type.Object({}),
      register(api) {
        api.hooks.message.tap((tx, message) => {
          const header = messageHeaderNow(tx, message);
          seen.now = header instanceof Promise ? 'promise' : header?.fields.map((f) => f.name);
          seen.read = message.readNow()?.equals((header as { buffer: Buffer }).buffer);
          seen.same = messageHeaderNow(tx, message) === header && cachedMessageHeader(tx, message) === header;
          return undefined;
        });
      },
    });
    t = await startTestServer({ plugins: [now, ['rcpt-local', { domains: ['example.com'] }]] });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@sender.example>', 250);
    await c.expect('RCPT TO:<user@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('From: a@sender.example\r\nSubject: hi\r\n\r\nbody')).code).toBe(250);
    expect(seen).toEqual({ now: ['received', 'from', 'subject'], read: true, same: true });
  });

  it('gives nothing for a large message (checks stream it)', async () => {
    const seen: { large?: boolean } = {};
    const large = definePlugin({
      name: 'large-probe',
      schema: Type.Object({}),
      register(api) {
        api.hooks.message.tap(async (tx, message) => {
          seen.large = (await messageHeader(tx, message)) === undefined;
          return undefined;
        });
      },
    });
    t = await startTestServer({ plugins: [large, ['rcpt-local', { domains: ['example.com'] }]] });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@sender.example>', 250);
    await c.expect('RCPT TO:<user@example.com>', 250);
    await c.expect('DATA', 354);
    const line = 'x'.repeat(998);
    const r = await c.sendData(`Subject: big\r\n\r\n${`${line}\r\n`.repeat(70)}`);
    expect(r.code).toBe(250);
    expect(seen.large).toBe(true);
  });
});
