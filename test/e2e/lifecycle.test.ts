/**
 * Session lifecycle under stress: clients that vanish mid-command or mid-DATA,
 * the reset and disconnect notifications, spool files cleaned up on every
 * path, and a flood of pipelined commands larger than the input buffer.
 */
import { readdir } from 'node:fs/promises';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { TestServer } from '../../core/testkit.ts';
import { splitReplies } from '../helpers/raw-socket.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

/** Refuses (550 5.7.1) messages from a sender whose local part is `refused`. */
const refuse = definePlugin({
  name: 'refuse-marked',
  schema: Type.Object({}),
  register(api) {
    api.hooks.message.tap((tx) =>
      tx.from.address?.localPart === 'refused' ? reply(550, '5.7.1', 'No') : undefined,
    );
  },
});

/** Records the notification hooks. */
function recorder() {
  const events: string[] = [];
  let wake: (() => void) | undefined;
  const plugin = definePlugin({
    name: 'recorder',
    schema: Type.Object({}),
    register(api) {
      api.hooks.reset.tap((tx) => {
        events.push(`reset:${tx.from.address?.localPart ?? ''}`);
      });
      api.hooks.disconnect.tap(() => {
        events.push('disconnect');
        wake?.();
      });
    },
  });
  const disconnected = (n: number) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (events.filter((e) => e === 'disconnect').length >= n) resolve();
      };
      wake = check;
      check();
      setTimeout(() => reject(new Error(`expected ${n} disconnects: ${events.join(', ')}`)), 3000).unref();
    });
  return { plugin, events, disconnected };
}

async function spoolFiles(t: TestServer): Promise<string[]> {
  return readdir(t.server.spoolDir);
}

describe('notifications', () => {
  it('fires reset on RSET, EHLO, a refused message and a disconnect, but not after queueing', async () => {
    const rec = recorder();
    const t = await scope.start({ plugins: [rec.plugin, refuse, LOCAL] });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<rset@b.example>', 250);
    await c.expect('RSET', 250);
    await c.expect('MAIL FROM:<ehlo@b.example>', 250);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<refused@b.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    await c.sendData('Subject: x\r\n\r\ny\r\n');
    await c.expect('MAIL FROM:<queued@b.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\ny\r\n')).code).toBe(250);
    await c.expect('MAIL FROM:<dropped@b.example>', 250);
    await c.close();
    await rec.disconnected(1);
    expect(rec.events).toEqual(['reset:rset', 'reset:ehlo', 'reset:refused', 'reset:dropped', 'disconnect']);
  });
});

describe('clients that go away', () => {
  it('survives a client closing while a hook is pending, and keeps serving', async () => {
    const rec = recorder();
    // Resolvers of rcpt taps still waiting, in arrival order.
    const waiting: Array<() => void> = [];
    let arrived: (() => void) | undefined;
    const nextWaiting = async (): Promise<() => void> => {
      while (waiting.length === 0) await new Promise<void>((r) => (arrived = r));
      return waiting.shift() as () => void;
    };
    const slow = definePlugin({
      name: 'slow',
      schema: Type.Object({}),
      register(api) {
        api.hooks.rcpt.tap(
          () =>
            new Promise<undefined>((resolve) => {
              waiting.push(() => resolve(undefined));
              arrived?.();
            }),
        );
      },
    });
    const t = await scope.start({ plugins: [rec.plugin, slow, LOCAL] });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<gone@b.example>', 250);
    c.send('RCPT TO:<bob@example.com>\r\nDATA\r\n');
    const first = await nextWaiting();
    c.socket.destroy();
    // The session finishes the command in progress, then notices the client is gone.
    first();
    await rec.disconnected(1);
    expect(rec.events).toEqual(['reset:gone', 'disconnect']);
    // A new client is served normally.
    const d = await scope.connect(t);
    await d.expect('EHLO client.example', 250);
    await d.expect('MAIL FROM:<next@b.example>', 250);
    d.send('RCPT TO:<bob@example.com>\r\n');
    (await nextWaiting())();
    await expect(d.read()).resolves.toMatchObject({ code: 250, enhanced: '2.1.5' });
    expect(t.queued).toHaveLength(0);
  });

  it('discards a large message when the client disconnects in the middle of DATA', async () => {
    const rec = recorder();
    const t = await scope.start({ plugins: [rec.plugin, LOCAL] });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    // More than the in-memory spool limit, so a spool file exists.
    const line = `${'z'.repeat(998)}\r\n`;
    await new Promise<void>((resolve) => c.socket.write(line.repeat(600), () => resolve()));
    c.socket.destroy();
    await rec.disconnected(1);
    expect(rec.events).toEqual(['reset:a', 'disconnect']);
    expect(t.queued).toHaveLength(0);
    expect(await spoolFiles(t)).toEqual([]);
  });
});

describe('clients that half-close (shutdown of their sending side)', () => {
  /** Taps that take a moment, so the client's FIN arrives while commands are still being answered. */
  const slow = definePlugin({
    name: 'slow',
    schema: Type.Object({}),
    register(api) {
      const later = () => new Promise<undefined>((resolve) => setTimeout(resolve, 100, undefined));
      api.hooks.rcpt.tap(later);
      api.hooks.queue.tap(async () => {
        await later();
        return undefined;
      });
    },
  });

  it('answers every command that arrived before the FIN, then closes', async () => {
    const t = await scope.start({ plugins: [slow, LOCAL] });
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write('EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nNOOP\r\n');
    raw.socket.end();
    await raw.waitClosed();
    expect(splitReplies(raw.since(mark)).map((r) => r.slice(0, 9))).toEqual([
      '250-mx.te',
      '250 2.1.0',
      '250 2.1.5',
      '250 2.0.0',
    ]);
  });

  it('queues a message followed by QUIT and a FIN, and still answers 250 and 221', async () => {
    const t = await scope.start({ plugins: [slow, LOCAL] });
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write('EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n');
    await raw.replies(4, mark);
    const next = raw.chunks.length;
    raw.write('Subject: fin\r\n\r\nbody\r\n.\r\nQUIT\r\n');
    raw.socket.end();
    await raw.waitClosed();
    expect(splitReplies(raw.since(next)).map((r) => r.slice(0, 9))).toEqual(['250 2.0.0', '221 2.0.0']);
    expect(t.queued).toHaveLength(1);
  });

  it('drops an unfinished message at the FIN and closes without waiting for the data timeout', async () => {
    const rec = recorder();
    const t = await scope.start({ plugins: [rec.plugin, LOCAL], config: { timeouts: { data: 60000 } } });
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write('EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n');
    await raw.replies(4, mark);
    raw.write(`Subject: cut\r\n\r\n${`${'w'.repeat(998)}\r\n`.repeat(400)}`);
    raw.socket.end();
    await raw.waitClosed();
    await rec.disconnected(1);
    expect(t.queued).toHaveLength(0);
    expect(await spoolFiles(t)).toEqual([]);
  });
});

describe('spool files', () => {
  it('leaves no spool file after queued, oversized and refused large messages', async () => {
    const t = await scope.start({
      plugins: [refuse, LOCAL],
      config: { limits: { maxMessageSize: 700 * 1024 } },
    });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    const body = (kb: number) => `Subject: big\r\n\r\n${`${'q'.repeat(1022)}\r\n`.repeat(kb)}`;
    for (const [from, kb, code] of [
      ['ok', 400, 250],
      ['toobig', 800, 552],
      ['refused', 400, 550],
    ] as const) {
      await c.expect(`MAIL FROM:<${from}@b.example>`, 250);
      await c.expect('RCPT TO:<bob@example.com>', 250);
      await c.expect('DATA', 354);
      expect((await c.sendData(body(kb))).code).toBe(code);
    }
    expect(t.queued).toHaveLength(1);
    expect(await spoolFiles(t)).toEqual([]);
  });
});

describe('a flood of pipelined commands', () => {
  it('answers 6000 pipelined NOOPs (more than the input buffer) in order', async () => {
    const t = await scope.start();
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write(`EHLO client.example\r\n${'NOOP 0123456789\r\n'.repeat(6000)}QUIT\r\n`);
    await raw.waitClosed(15000);
    const replies = splitReplies(raw.since(mark));
    expect(replies).toHaveLength(6002);
    expect(replies.slice(1, -1).every((r) => r === '250 2.0.0 OK\r\n')).toBe(true);
    expect(replies.at(-1)).toBe('221 2.0.0 Bye\r\n');
  });
});

describe('error counting', () => {
  it('sends a single 421 when the closing reply itself reaches maxErrors', async () => {
    const t = await scope.start({ config: { limits: { maxErrors: 2 } } });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('BOGUS', 500, '5.5.2');
    const closing = t.server.close(5000);
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([421, '4.3.2']);
    await c.waitClosed();
    expect(c.pending).toBe('');
    await closing;
  });
});
