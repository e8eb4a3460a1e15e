/**
 * What the `metrics` plugin's observers cost per W1 message, measured alone:
 * the events one W1 transaction produces (a session opened and closed, seven
 * replies, one transaction queued) fed straight into the plugin's observers
 * of a real server, in a tight loop. A figure a shared machine cannot blur as
 * it blurs the end-to-end CPU per message of `npm run bench:metrics`.
 *
 *   npx tsx bench/metrics-micro.ts [--messages 200000]
 */
import { parseArgs } from 'node:util';
import { Replies, reply } from '../core/reply.ts';
import { startTestServer } from '../core/testkit.ts';
import type { Session, Transaction } from '../core/types.ts';

const { values } = parseArgs({ options: { messages: { type: 'string', default: '200000' } } });
const n = Math.max(1000, Number(values.messages) || 200_000);
const t = await startTestServer({ plugins: [['metrics', { port: 0, processMetrics: false }]] });
try {
  const o = t.server.observers;
  const session = { listener: { name: 'smtp' } } as unknown as Session;
  const tx = { session, notes: {}, recipients: [] } as unknown as Transaction;
  const greeting = reply(220, undefined, 'bench.local ESMTP');
  const ehlo = reply(250, undefined, ['bench.local greets x', 'PIPELINING', 'ENHANCEDSTATUSCODES']);
  const one = () => {
    o.connection?.(session, 'open');
    o.reply?.(session, greeting, undefined);
    o.reply?.(session, ehlo, 'EHLO');
    o.reply?.(session, Replies.senderOk, 'MAIL');
    o.reply?.(session, Replies.recipientOk, 'RCPT');
    o.reply?.(session, Replies.startData, 'DATA');
    o.transaction?.(tx, { outcome: 'queued', size: 2048 });
    o.reply?.(session, reply(250, '2.0.0', 'Ok: queued as x'), 'DATA');
    o.reply?.(session, Replies.bye, 'QUIT');
    o.connection?.(session, 'close');
  };
  for (let i = 0; i < 20_000; i++) one();
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) one();
  const c = process.cpuUsage(c0);
  const usPerMessage = (c.user + c.system) / n;
  process.stdout.write(
    `metrics observers: ${(usPerMessage * 1000).toFixed(0)} ns CPU per W1 message (${n} messages)\n`,
  );
} finally {
  await t.close();
}
