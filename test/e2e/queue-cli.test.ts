import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { QueueDetail, QueueStats, QueueSummary } from '../../plugins/queue/types.ts';
import { SCHEMA_VERSION } from '../../plugins/queue-pg/migrations.ts';
import {
  queueCli as cli,
  Deliverer,
  FakeClock,
  fsStore,
  queueCliJson as json,
  MINUTE,
  type QueueStoreKind,
  sendMail,
  startForCli,
  startQueueServer,
  useQueueScope,
} from './queue-harness.ts';

const scope = useQueueScope();

/** A server whose deliveries defer until told otherwise, and a config file pointing at its queue. */
const setup = (store: QueueStoreKind = fsStore) => startForCli(scope, { store, defer: true });

const deliverAll = () => ({ code: 250, enhanced: '2.0.0', text: 'OK' });

describe.each(scope.stores)('mailframe queue (CLI) on $name', (store) => {
  it('lists, shows, holds and releases messages of the running server', async () => {
    const { clock, config, d, s } = await setup(store);
    const a = await sendMail(s.port, {
      from: 'alice@example.net',
      to: ['bob@example.com', 'carol@example.org'],
    });
    const b = await sendMail(s.port, { from: 'dave@example.net', to: ['erin@example.com'] });
    await s.queue.runDue();

    const listed = await json<QueueSummary[]>(config, 'list');
    expect(listed.map((m) => [m.id, m.state, m.pending, m.attempts])).toEqual([
      [a, 'deferred', 2, 1],
      [b, 'deferred', 1, 1],
    ]);
    const table = await cli(config, 'list');
    expect(table.code).toBe(0);
    expect(table.out).toMatch(/^ID\s+AGE\s+SIZE\s+STATE\s+RCPTS\s+TRIES\s+NEXT\s+FROM/);
    expect(table.out).toContain(a);
    expect(table.out).toContain('451 4.3.0 not now');
    expect(table.out).toContain('2 messages');

    const shown = await cli(config, 'show', a);
    expect(shown.code).toBe(0);
    expect(shown.out).toContain('<alice@example.net>');
    expect(shown.out).toMatch(/pending\s+1\s+\S.*bob@example\.com\s+451 4\.3\.0 not now/);
    expect(shown.out).toContain('Subject: test');

    expect(await cli(config, 'hold', a)).toEqual({ code: 0, out: `held ${a}\n`, err: '' });
    expect((await json<QueueSummary[]>(config, 'list', '--state', 'held')).map((m) => m.id)).toEqual([a]);
    d.behaviour = deliverAll;
    clock.advance(5 * MINUTE);
    await s.queue.runDue();
    expect(d.seen.filter((x) => x.job.id === a)).toHaveLength(2); // first attempt only (two destinations)
    expect((await json<QueueSummary[]>(config, 'list')).map((m) => m.id)).toEqual([a]);

    // retry leaves a held message held
    expect((await cli(config, 'retry', a)).code).toBe(0);
    await s.queue.runDue();
    expect((await json<QueueDetail>(config, 'show', a)).state).toBe('held');

    expect(await cli(config, 'release', a)).toEqual({ code: 0, out: `released ${a}\n`, err: '' });
    await s.queue.runDue();
    expect(d.seen.filter((x) => x.job.id === a)).toHaveLength(4);
    expect(await json<QueueSummary[]>(config, 'list')).toEqual([]);
  });

  it('retry makes a deferred message due now; delete removes it without a bounce', async () => {
    const { config, d, s } = await setup(store);
    const a = await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    const b = await sendMail(s.port, { from: 'alice@example.net', to: ['carol@example.com'] });
    await s.queue.runDue();
    d.behaviour = deliverAll;
    await s.queue.runDue();
    expect(d.seen).toHaveLength(2); // nothing due yet

    expect((await cli(config, 'retry', a)).out).toBe(`due now: ${a}\n`);
    await s.queue.runDue();
    expect(d.seen.map((x) => x.job.id)).toEqual([a, b, a]);

    expect(await cli(config, 'delete', b)).toEqual({ code: 0, out: `deleted ${b}\n`, err: '' });
    const gone = await cli(config, 'show', b);
    expect(gone.code).toBe(1);
    expect(gone.err).toContain(`no message ${b}`);
    expect((await json<QueueStats>(config, 'stats')).messages).toBe(0);
    expect(d.seen.filter((x) => x.job.from === '')).toEqual([]);
  });

  it('works on the queue directly when the server is stopped', async () => {
    const { clock, dataDir, config, s } = await setup(store);
    const a = await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    const b = await sendMail(s.port, { from: 'alice@example.net', to: ['carol@example.com'] });
    await s.queue.runDue();
    await s.close();

    expect((await json<QueueSummary[]>(config, 'list')).map((m) => m.id)).toEqual([a, b]);
    expect((await cli(config, 'hold', a)).code).toBe(0);
    expect((await cli(config, 'delete', b)).code).toBe(0);
    const stats = await json<QueueStats>(config, 'stats');
    expect([stats.messages, stats.held]).toEqual([1, 1]);
    const text = await cli(config, 'stats');
    expect(text.out).toMatch(/Messages:\s+1 \(0 deferred, 1 held\)/);

    const d2 = new Deliverer(clock);
    const server = await scope.start({ store, clock, dataDir, plugins: [d2.plugin] });
    clock.advance(60 * MINUTE);
    await server.queue.runDue();
    expect(d2.seen).toEqual([]);
    expect((await cli(config, 'release', a)).code).toBe(0);
    await server.queue.runDue();
    expect(d2.seen.map((x) => x.job.id)).toEqual([a]);
  });

  it('answers usage errors with exit code 2', async () => {
    const { config } = await setup(store);
    expect((await cli(config, 'show')).code).toBe(2);
    expect((await cli(config, 'frobnicate')).code).toBe(2);
    expect((await cli(config, 'list', '--state', 'weird')).code).toBe(2);
    expect((await cli(config)).code).toBe(2);
    const help = await cli(config, '--help');
    expect(help.code).toBe(0);
    expect(help.out).toContain('Usage: mailframe queue');
  });
});

describe('mailframe queue (CLI) on queue-fs', () => {
  it('answers malformed control-socket requests with bad-request, in order', async () => {
    const { dataDir } = await setup();
    const socket = connect({ path: join(dataDir, 'queue', 'control.sock') });
    socket.setEncoding('utf8');
    let text = '';
    socket.on('data', (s: string) => {
      text += s;
    });
    socket.write(
      'nonsense\n{"op":"frobnicate"}\n{"op":"show"}\n{"op":"list","filter":{"state":"odd"}}\n{"op":"stats"}\n',
    );
    while (text.split('\n').length < 6) await new Promise((r) => setTimeout(r, 10));
    socket.destroy();
    const answers = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { ok: boolean; code?: string; error?: string });
    expect(answers.map((a) => a.code ?? 'ok')).toEqual([
      'bad-request',
      'bad-request',
      'bad-request',
      'bad-request',
      'ok',
    ]);
    expect(answers[2]?.error).toBe('show needs a message id');
  });
});

describe('mailframe queue migrate (queue-pg)', () => {
  it('applies the schema a server with "migrate": false refuses to start without', async () => {
    const store = scope.stores.find((k) => k.name === 'queue-pg') as QueueStoreKind;
    const clock = new FakeClock();
    const dir = await scope.tempDir();
    const dataDir = join(dir, 'data');
    const queueConfig: Record<string, unknown> = { ...(await store.config(dataDir)), migrate: false };
    const config = join(dir, 'mailframe.json');
    await writeFile(config, JSON.stringify({ plugins: [{ plugin: 'queue-pg', config: queueConfig }] }));

    await expect(startQueueServer({ store, clock, dataDir, queue: { migrate: false } })).rejects.toThrow(
      /has no queue tables yet: run "mailframe queue migrate"/,
    );
    const schema = queueConfig['schema'] as string;
    expect(await cli(config, 'migrate')).toEqual({
      code: 0,
      out: `queue schema "${schema}" migrated to version ${SCHEMA_VERSION} (applied ${Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1).join(', ')})\n`,
      err: '',
    });
    expect((await cli(config, 'migrate')).out).toBe(
      `queue schema "${schema}" is up to date (version ${SCHEMA_VERSION})\n`,
    );
    const s = await scope.start({ store, clock, dataDir, queue: { migrate: false } });
    expect(await json<QueueStats>(config, 'stats')).toMatchObject({ messages: 0 });
    await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    expect((await json<QueueStats>(config, 'stats')).messages).toBe(1);
  });
});
