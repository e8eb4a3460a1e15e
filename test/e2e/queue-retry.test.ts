import { describe, expect, it } from 'vitest';
import { MailServer } from '../../core/server.ts';
import {
  DAY,
  Deliverer,
  FakeClock,
  HOUR,
  MINUTE,
  parseFieldGroups,
  parseMultipart,
  type QueueServer,
  type QueueStoreKind,
  sendMail,
  useQueueScope,
} from './queue-harness.ts';

const scope = useQueueScope();

/** Defers every message except bounces (which are delivered). */
async function setup(store: QueueStoreKind, queue: Record<string, unknown>) {
  const clock = new FakeClock();
  const dir = await scope.tempDir();
  const d = new Deliverer(clock);
  d.behaviour = (job) =>
    job.from === ''
      ? { code: 250, enhanced: '2.0.0', text: 'OK' }
      : { code: 451, enhanced: '4.4.1', text: 'Connection timed out' };
  const s = await scope.start({ store, clock, dataDir: dir, plugins: ['dsn', d.plugin], queue });
  return { clock, d, s, start: clock.now() };
}

/** Jump the clock to each next attempt and run it, until nothing is left or `until` passes. */
async function runUntilDone(s: QueueServer, clock: FakeClock, until: number): Promise<void> {
  await s.queue.runDue();
  for (;;) {
    const next = (await s.queue.stats()).nextAttemptAt;
    if (next === undefined || next > until) return;
    clock.t = Math.max(clock.t, next);
    await s.queue.runDue();
  }
}

describe.each(scope.stores)('retries on $name', (store) => {
  it('follows the retry schedule and gives up at maxAge with a failure notification', async () => {
    const { clock, d, s, start } = await setup(store, { retry: '5m, 30m, 1h...', maxAge: '3h' });
    await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    await s.queue.runDue();
    clock.advance(4 * MINUTE);
    await s.queue.runDue();
    expect(d.seen).toHaveLength(1); // 4 minutes: not yet

    await runUntilDone(s, clock, start + DAY);
    const attempts = d.from('alice@example.net').map((x) => (x.at - start) / MINUTE);
    // 5m, 30m, then 1h repeated; the last retry is moved up to the give-up time (3h).
    expect(attempts).toEqual([0, 5, 35, 95, 155, 180]);
    expect(d.from('alice@example.net').map((x) => x.job.attempts)).toEqual([0, 1, 2, 3, 4, 5]);

    const [bounce] = d.from('');
    expect(bounce?.at).toBe(start + 3 * HOUR);
    const { parts } = parseMultipart(bounce?.message ?? '');
    const rcpt = parseFieldGroups(parts[1]?.body ?? '')[1];
    expect(rcpt?.get('action')).toBe('failed');
    expect(rcpt?.get('status')).toBe('4.4.7');
    expect(rcpt?.get('diagnostic-code')).toBe(
      'smtp; 451 4.4.1 Connection timed out (gave up after 6 attempts in 3h)',
    );
    expect(await s.queue.list()).toEqual([]);
  });

  it('ends a schedule without "..." after its last delay', async () => {
    const { clock, d, s, start } = await setup(store, { retry: '1m, 2m' });
    await sendMail(s.port, { from: 'alice@example.net', to: ['bob@example.com'] });
    await runUntilDone(s, clock, start + DAY);
    expect(d.from('alice@example.net').map((x) => (x.at - start) / MINUTE)).toEqual([0, 1, 3]);
    expect(d.from('')).toHaveLength(1);
    expect(await s.queue.list()).toEqual([]);
  });

  it('sends one DELAY notification after delayWarning to recipients whose NOTIFY allows it', async () => {
    const { clock, d, s, start } = await setup(store, { retry: '30m...', delayWarning: '1h', maxAge: '5d' });
    await sendMail(s.port, {
      from: 'alice@example.net',
      to: ['bob@example.com', 'carol@example.com', 'dan@example.com'],
      rcptParams: ['NOTIFY=DELAY,FAILURE', 'NOTIFY=FAILURE', undefined],
    });
    await runUntilDone(s, clock, start + 4 * HOUR);
    const warnings = d.from('');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.at).toBe(start + HOUR);
    const { headers, parts } = parseMultipart(warnings[0]?.message ?? '');
    expect(headers).toContain('Subject: Delayed Mail (still being retried)');
    const groups = parseFieldGroups(parts[1]?.body ?? '').slice(1);
    expect(groups.map((g) => [g.get('final-recipient'), g.get('action'), g.get('status')])).toEqual([
      ['rfc822; bob@example.com', 'delayed', '4.4.1'],
      ['rfc822; dan@example.com', 'delayed', '4.4.1'],
    ]);
    expect(groups[0]?.get('will-retry-until')).toBe('Sat, 7 Mar 2026 10:00:00 +0000');
    expect(parts[2]?.headers).toContain('Content-Type: text/rfc822-headers');
    // Still queued and still being retried.
    expect((await s.queue.list()).map((m) => [m.pending, m.state])).toEqual([[3, 'deferred']]);
  });

  it('stops start-up with a clear message for a bad schedule', async () => {
    const clock = new FakeClock();
    const dir = await scope.tempDir();
    const storeConfig = await store.config(dir);
    const create = (queue: Record<string, unknown>) =>
      MailServer.create({
        config: { dataDir: dir, plugins: [{ plugin: store.name, config: { ...storeConfig, ...queue } }] },
        clock,
      });
    await expect(create({ retry: '5m, soon' })).rejects.toThrow(
      new RegExp(`${store.name}.*retry: item 2 \\("soon"\\): "soon" is not a duration`),
    );
    await expect(create({ retry: '5m..., 1h' })).rejects.toThrow(/only the last delay may end with "\.\.\."/);
    await expect(create({ maxAge: 'forever' })).rejects.toThrow(/maxAge: "forever" is not a duration/);
    await expect(create({ delayWarning: '6d' })).rejects.toThrow(
      /delayWarning: 6d is not shorter than maxAge/,
    );
    await expect(create({ routes: [{ domains: ['ex*ample.com'], via: 'x' }] })).rejects.toThrow(
      /routes\/0\/domains\/0: "ex\*ample.com" is not a domain or a pattern/,
    );
  });
});
