import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { decide } from '../../plugins/policy/policy.ts';
import type { QueueDetail, QueueStats, QueueSummary } from '../../plugins/queue/types.ts';
import {
  queueCli as cli,
  Deliverer,
  fsStore,
  queueCliJson as json,
  MINUTE,
  type QueueStoreKind,
  sendMail,
  startForCli,
  useQueueScope,
} from './queue-harness.ts';

const scope = useQueueScope();

/** Says `quarantine` (through the policy model) for mail from spammer@example.net. */
const quarantineSpammer = definePlugin({
  name: 'test-quarantine',
  schema: Type.Object({}),
  register(api) {
    api.hooks.mail.tap((tx, from) =>
      from.address?.address === 'spammer@example.net'
        ? decide(tx, 'test-quarantine', 'fail', { fail: { action: 'quarantine' } })
        : undefined,
    );
  },
});

const setup = (store: QueueStoreKind = fsStore) =>
  startForCli(scope, { store, plugins: [quarantineSpammer] });

const delivered = (d: Deliverer) => d.seen.map((x) => x.job.id);

describe.each(scope.stores)('quarantine on $name', (store) => {
  it('keeps a quarantined message from delivery; list, show, release delivers it, delete removes it', async () => {
    const { config, d, s } = await setup(store);
    const q = await sendMail(s.port, { from: 'spammer@example.net', to: ['bob@example.com'] });
    const n = await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    const q2 = await sendMail(s.port, { from: 'spammer@example.net', to: ['carol@example.com'] });
    await s.queue.runDue();
    expect(delivered(d)).toEqual([n]);

    const listed = await json<QueueSummary[]>(config, 'quarantine', 'list');
    expect(listed.map((m) => [m.id, m.state, m.quarantine])).toEqual([
      [q, 'quarantined', { check: 'test-quarantine', result: 'fail' }],
      [q2, 'quarantined', { check: 'test-quarantine', result: 'fail' }],
    ]);
    const table = await cli(config, 'quarantine', 'list');
    expect(table.out).toMatch(/^ID\s+AGE\s+SIZE\s+RCPTS\s+REASON\s+FROM/);
    expect(table.out).toMatch(new RegExp(`${q}\\s.*test-quarantine fail\\s+spammer@example\\.net`));
    expect(table.out).toContain('2 quarantined messages');
    // The whole queue lists them too, in their state.
    expect((await json<QueueSummary[]>(config, 'list', '--state', 'quarantined')).map((m) => m.id)).toEqual([
      q,
      q2,
    ]);
    expect((await json<QueueStats>(config, 'stats')).quarantined).toBe(2);

    const shown = await cli(config, 'quarantine', 'show', q);
    expect(shown.code).toBe(0);
    expect(shown.out).toMatch(/State:\s+quarantined \(test-quarantine fail\)/);
    expect(shown.out).toContain('From: <spammer@example.net>');
    // A message that is not quarantined is not in the quarantine.
    const notThere = await cli(config, 'quarantine', 'show', n);
    expect([notThere.code, notThere.err]).toEqual([
      1,
      `mailframe queue: no message ${n} in the quarantine\n`,
    ]);

    // hold and retry leave it in the quarantine.
    expect((await cli(config, 'hold', q)).code).toBe(0);
    expect((await cli(config, 'retry', q)).code).toBe(0);
    await s.queue.runDue();
    expect(delivered(d)).toEqual([n]);
    expect((await json<QueueDetail>(config, 'show', q)).state).toBe('quarantined');

    expect(await cli(config, 'quarantine', 'release', q)).toEqual({
      code: 0,
      out: `released ${q}\n`,
      err: '',
    });
    await s.queue.runDue();
    expect(delivered(d)).toEqual([n, q]);

    expect(await cli(config, 'quarantine', 'delete', q2)).toEqual({
      code: 0,
      out: `deleted ${q2}\n`,
      err: '',
    });
    await s.queue.runDue();
    expect(delivered(d)).toEqual([n, q]);
    expect(d.from('')).toEqual([]); // no bounce
    expect(await json<QueueSummary[]>(config, 'quarantine', 'list')).toEqual([]);
    expect((await cli(config, 'quarantine', 'list')).out).toBe('The quarantine is empty.\n');
  });

  it('survives a restart, and is managed on the queue while the server is stopped', async () => {
    const { clock, dataDir, config, d, s } = await setup(store);
    const q = await sendMail(s.port, { from: 'spammer@example.net', to: ['bob@example.com'] });
    const q2 = await sendMail(s.port, { from: 'spammer@example.net', to: ['carol@example.com'] });
    await s.queue.runDue();
    expect(delivered(d)).toEqual([]);
    await s.close();

    expect((await json<QueueSummary[]>(config, 'quarantine', 'list')).map((m) => m.id)).toEqual([q, q2]);
    expect((await cli(config, 'quarantine', 'release', q)).code).toBe(0);

    const d2 = new Deliverer(clock);
    const s2 = await scope.start({ store, clock, dataDir, plugins: [quarantineSpammer, d2.plugin] });
    clock.advance(60 * MINUTE);
    await s2.queue.runDue();
    // Released while stopped: delivered; the other is still quarantined after the restart.
    expect(delivered(d2)).toEqual([q]);
    expect((await json<QueueSummary[]>(config, 'quarantine', 'list')).map((m) => m.id)).toEqual([q2]);
  });
});

describe('quarantine (CLI)', () => {
  it('answers usage errors with exit code 2', async () => {
    const { config } = await setup();
    expect((await cli(config, 'quarantine', 'list')).code).toBe(0);
    expect((await cli(config, '--help')).out).toContain('quarantine release ID');
    expect((await cli(config, 'quarantine')).code).toBe(2);
    expect((await cli(config, 'quarantine', 'hold', 'x')).code).toBe(2);
    expect((await cli(config, 'quarantine', 'release')).code).toBe(2);
    expect((await cli(config, 'quarantine', 'list', '--state', 'held')).code).toBe(2);
  });
});
