/**
 * Observers (`api.observe`): what each event carries, in order, over a real
 * conversation; an observer that throws is logged and ignored (the session and
 * the other observers carry on); a plugin's observers go when it closes.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

function captureLog() {
  const lines: Array<{ msg: string; plugin?: string; observer?: string }> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l));
      done();
    },
  });
  return { lines, logger: pino({ level: 'info' }, sink) };
}

describe('observers', () => {
  it('see connections, replies with the command they answer, transaction ends and asynchronous hook timings; a throwing one is isolated', async () => {
    const seen: string[] = [];
    const watcher = definePlugin({
      name: 'watcher',
      schema: Type.Object({}),
      register(api) {
        api.observe({
          connection: (s, event) => seen.push(`${event} ${s.listener.name}`),
          reply: (_s, r, verb) => seen.push(`${verb ?? '-'} ${r.code}`),
          transaction: (tx, end) => seen.push(`tx ${end.outcome} ${end.size ?? '-'} ${tx.recipients.length}`),
          hook: (plugin, hook, seconds, outcome) => {
            if (plugin === 'slow') seen.push(`hook ${hook} ${outcome} ${seconds >= 0}`);
          },
        });
      },
    });
    const broken = definePlugin({
      name: 'broken',
      schema: Type.Object({}),
      register(api) {
        api.observe({
          reply: () => {
            throw new Error('observer bug');
          },
        });
      },
    });
    // An asynchronous tap is timed; rcpt-local's synchronous one is not reported.
    const slow = definePlugin({
      name: 'slow',
      schema: Type.Object({}),
      register(api) {
        api.hooks.rcpt.tap(async () => undefined);
      },
    });
    const { lines, logger } = captureLog();
    const t = await scope.start({
      logger,
      standardExtensions: false,
      plugins: [broken, watcher, slow, ['rcpt-local', { domains: ['example.com'] }]],
    });
    const c = await scope.connect(t);
    await c.expect('HELO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RCPT TO:<x@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: o\r\n\r\nbody\r\n')).code).toBe(250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RSET', 250);
    await c.expect('QUIT', 221);
    await c.waitClosed();
    for (let i = 0; i < 1000 && t.server.connections > 0; i++) await new Promise((r) => setImmediate(r));
    expect(seen).toEqual([
      'open smtp',
      '- 220',
      'HELO 250',
      'MAIL 250',
      'hook rcpt ok true',
      'RCPT 250',
      'DATA 354',
      'tx queued 20 1',
      'DATA 250',
      'MAIL 250',
      'tx rset - 0',
      'RSET 250',
      'QUIT 221',
      'close smtp',
    ]);
    // Every reply went to the broken observer too: each throw logged once, naming the plugin.
    const failures = lines.filter((l) => l.msg === 'observer failed');
    expect(failures).toHaveLength(9);
    expect(failures.every((l) => l.plugin === 'broken' && l.observer === 'reply')).toBe(true);

    // Closed plugins observe nothing more.
    await t.close();
    const before = seen.length;
    expect(t.server.observers.reply).toBeUndefined();
    expect(t.server.observers.connection).toBeUndefined();
    expect(seen.length).toBe(before);
  });
});
