/**
 * Greylisting over real SMTP sessions, on an injected clock: the first
 * attempt of a triplet is 450 4.7.1, a retry before the delay too, one after
 * it passes; a passed triplet is remembered across a restart (same
 * dataDir); unpassed and passed triplets expire; the allow-list; clients of
 * one /24 share a triplet.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SmtpReply, TestPlugin, TestServer } from '../../core/testkit.ts';
import type { GreylistResult } from '../../plugins/greylist/index.ts';
import {
  asyncStore,
  brokenStore,
  connectFrom,
  DAY,
  FakeClock,
  fakeDnswl,
  MINUTE,
} from '../helpers/policy-state.ts';
import { useScope } from '../helpers/scope.ts';
import { loggedInAs, resultsProbe } from '../helpers/test-plugins.ts';

const scope = useScope();

interface Setup {
  readonly clock?: FakeClock;
  readonly greylist?: Record<string, unknown>;
  readonly before?: readonly TestPlugin[];
  readonly after?: readonly TestPlugin[];
  readonly dataDir?: string;
}

async function start(o: Setup = {}): Promise<TestServer> {
  return scope.start({
    clock: o.clock ?? new FakeClock(),
    ...(o.dataDir === undefined ? {} : { dataDir: o.dataDir }),
    plugins: [
      'policy-store',
      ...(o.before ?? []),
      ['greylist', o.greylist ?? {}],
      ['rcpt-local', { domains: ['example.com', 'lists.example.com'] }],
      ...(o.after ?? []),
    ],
  });
}

/** One session up to RCPT: the RCPT replies, then QUIT. */
async function attempt(
  t: TestServer,
  o: { from?: string; to?: string | readonly string[]; client?: string } = {},
): Promise<SmtpReply[]> {
  const c = await connectFrom(t, o.client);
  try {
    await c.expect('EHLO client.example.org', 250);
    await c.expect(`MAIL FROM:<${o.from ?? 'alice@example.org'}>`, 250);
    const to = typeof o.to === 'string' ? [o.to] : (o.to ?? ['bob@example.com']);
    const replies: SmtpReply[] = [];
    for (const rcpt of to) replies.push(await c.command(`RCPT TO:<${rcpt}>`));
    await c.expect('QUIT', 221);
    return replies;
  } finally {
    await c.close();
  }
}

async function rcptCode(t: TestServer, o?: Parameters<typeof attempt>[1]): Promise<string> {
  const [r] = await attempt(t, o);
  return `${r?.code} ${r?.enhanced}`;
}

describe('greylist', () => {
  it('refuses a new triplet with 450 4.7.1 until it retries after the delay', async () => {
    const clock = new FakeClock();
    const t = await start({ clock });
    const [first] = await attempt(t);
    expect(first?.code).toBe(450);
    expect(first?.enhanced).toBe('4.7.1');
    expect(first?.lines[0]).toBe('Greylisted, try again in 5m');
    clock.advance(4 * MINUTE);
    const [early] = await attempt(t);
    expect(`${early?.code} ${early?.enhanced} ${early?.lines[0]}`).toBe(
      '450 4.7.1 Greylisted, try again in 1m',
    );
    clock.advance(MINUTE);
    expect(await rcptCode(t)).toBe('250 2.1.5');
  });

  it('records its result for policy, and leaves it out of Authentication-Results', async () => {
    const clock = new FakeClock();
    const seen: GreylistResult[][] = [];
    const t = await start({
      clock,
      after: ['auth-results', resultsProbe('greylist', (r) => seen.push([...r]))],
    });
    await attempt(t);
    clock.advance(5 * MINUTE);
    const c = await connectFrom(t);
    await c.expect('EHLO client.example.org', 250);
    await c.expect('MAIL FROM:<alice@example.org>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: hi\r\n\r\nhello')).code).toBe(250);
    await c.close();
    expect(seen).toEqual([
      [
        {
          result: 'pass',
          status: 'passed',
          triplet: '127.0.0.0/24|alice@example.org|bob@example.com',
        },
      ],
    ]);
    const [message] = await t.waitForMessages(1);
    expect(message?.text).toMatch(/^Authentication-Results: mx\.test\.example; none\r\n/);
  });

  it('remembers a passed triplet across a restart on the same dataDir', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mailframe-greylist-'));
    scope.defer(() => rm(dataDir, { recursive: true, force: true }));
    const clock = new FakeClock();
    const first = await start({ clock, dataDir });
    expect(await rcptCode(first)).toBe('450 4.7.1');
    clock.advance(5 * MINUTE);
    expect(await rcptCode(first)).toBe('250 2.1.5');
    await first.close();

    clock.advance(DAY);
    const second = await start({ clock, dataDir });
    expect(await rcptCode(second)).toBe('250 2.1.5');
    // Other triplets are still new to it.
    expect(await rcptCode(second, { from: 'carol@example.org' })).toBe('450 4.7.1');
  });

  it('forgets an unpassed triplet after the retry window, a passed one after its lifetime without use', async () => {
    const clock = new FakeClock();
    const t = await start({ clock, greylist: { retryWindow: '2d', lifetime: '35d' } });
    expect(await rcptCode(t)).toBe('450 4.7.1');
    clock.advance(2 * DAY);
    // Too late: this attempt is a new first attempt, with its own delay.
    expect(await rcptCode(t)).toBe('450 4.7.1');
    clock.advance(5 * MINUTE);
    expect(await rcptCode(t)).toBe('250 2.1.5');
    // Each use renews the lifetime...
    clock.advance(30 * DAY);
    expect(await rcptCode(t)).toBe('250 2.1.5');
    clock.advance(30 * DAY);
    expect(await rcptCode(t)).toBe('250 2.1.5');
    // ...and 35 days without one forget the triplet.
    clock.advance(35 * DAY);
    expect(await rcptCode(t)).toBe('450 4.7.1');
  });

  it('lets clients of one /24 share a triplet (127.0.0.2 and 127.0.0.3), but not with a /32', async () => {
    const clock = new FakeClock();
    const t = await start({ clock });
    expect(await rcptCode(t, { client: '127.0.0.2' })).toBe('450 4.7.1');
    clock.advance(5 * MINUTE);
    expect(await rcptCode(t, { client: '127.0.0.3' })).toBe('250 2.1.5');

    const exact = await start({ clock, greylist: { ipv4Prefix: 32 } });
    expect(await rcptCode(exact, { client: '127.0.0.2' })).toBe('450 4.7.1');
    clock.advance(5 * MINUTE);
    expect(await rcptCode(exact, { client: '127.0.0.3' })).toBe('450 4.7.1');
  });

  it('keys an IPv6 client by its /64', async () => {
    const clock = new FakeClock();
    const seen: GreylistResult[][] = [];
    const t = await scope.start({
      clock,
      config: { listeners: [{ name: 'smtp', host: '::1', port: 0 }] },
      plugins: [
        'policy-store',
        'greylist',
        ['rcpt-local', { domains: ['example.com'] }],
        resultsProbe('greylist', (r) => seen.push([...r])),
      ],
    });
    expect(await rcptCode(t, { client: '::1' })).toBe('450 4.7.1');
    clock.advance(5 * MINUTE);
    const c = await connectFrom(t, '::1');
    await c.expect('EHLO client.example.org', 250);
    await c.expect('MAIL FROM:<alice@example.org>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\nx')).code).toBe(250);
    await c.close();
    expect(seen[0]?.[0]?.triplet).toBe('::/64|alice@example.org|bob@example.com');
  });

  it('greylists the null sender per recipient, and each recipient of a transaction on its own', async () => {
    const clock = new FakeClock();
    const t = await start({ clock });
    expect(await rcptCode(t, { from: '' })).toBe('450 4.7.1');
    clock.advance(5 * MINUTE);
    const replies = await attempt(t, { from: '', to: ['bob@example.com', 'dave@example.com'] });
    expect(replies.map((r) => r.code)).toEqual([250, 450]);
  });

  it('never greylists <Postmaster>', async () => {
    const t = await start();
    expect(await rcptCode(t, { to: 'Postmaster' })).toBe('250 2.1.5');
  });

  describe('allow-list', () => {
    it('networks', async () => {
      const t = await start({ greylist: { allow: { networks: ['127.0.0.2', '10.0.0.0/8'] } } });
      expect(await rcptCode(t, { client: '127.0.0.2' })).toBe('250 2.1.5');
      expect(await rcptCode(t, { client: '127.0.0.3' })).toBe('450 4.7.1');
    });

    it('sender and recipient domains, with their subdomains', async () => {
      const t = await start({
        greylist: { allow: { senderDomains: ['example.net'], recipientDomains: ['lists.example.com'] } },
      });
      expect(await rcptCode(t, { from: 'x@mail.example.net' })).toBe('250 2.1.5');
      expect(await rcptCode(t, { to: 'news@lists.example.com' })).toBe('250 2.1.5');
      expect(await rcptCode(t, { from: 'x@example.org' })).toBe('450 4.7.1');
    });

    it('authenticated sessions, unless told otherwise', async () => {
      const t = await start({ before: [loggedInAs('alice')] });
      expect(await rcptCode(t)).toBe('250 2.1.5');
      const strict = await start({
        before: [loggedInAs('alice')],
        greylist: { allow: { authenticated: false } },
      });
      expect(await rcptCode(strict)).toBe('450 4.7.1');
    });

    it('a dnswl pass recorded before RCPT', async () => {
      const t = await start({ before: [fakeDnswl('127.0.0.2')] });
      expect(await rcptCode(t, { client: '127.0.0.2' })).toBe('250 2.1.5');
      expect(await rcptCode(t, { client: '127.0.0.3' })).toBe('450 4.7.1');
      const ignoring = await start({ before: [fakeDnswl('127.0.0.2')], greylist: { allow: { checks: [] } } });
      expect(await rcptCode(ignoring, { client: '127.0.0.2' })).toBe('450 4.7.1');
    });
  });

  it('follows the action map: tag only records', async () => {
    const t = await start({ greylist: { actions: { fail: { action: 'tag' } } } });
    expect(await rcptCode(t)).toBe('250 2.1.5');
  });

  it('works the same on a store that answers with promises (as a database store does)', async () => {
    const clock = new FakeClock();
    const t = await scope.start({
      clock,
      plugins: [asyncStore, 'greylist', ['rcpt-local', { domains: ['example.com'] }]],
    });
    expect(await rcptCode(t)).toBe('450 4.7.1');
    clock.advance(4 * MINUTE);
    expect(await rcptCode(t)).toBe('450 4.7.1');
    clock.advance(MINUTE);
    expect(await rcptCode(t)).toBe('250 2.1.5');
  });

  it('fails open when the store fails (temperror), or closed when the action map says so', async () => {
    const seen: GreylistResult[][] = [];
    const plugins = (actions: Record<string, unknown>): TestPlugin[] => [
      brokenStore,
      ['greylist', { actions }],
      ['rcpt-local', { domains: ['example.com'] }],
      resultsProbe('greylist', (r) => seen.push([...r])),
    ];
    const open = await scope.start({ plugins: plugins({}) });
    const c = await connectFrom(open);
    await c.expect('EHLO client.example.org', 250);
    await c.expect('MAIL FROM:<alice@example.org>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\nx')).code).toBe(250);
    await c.close();
    expect(seen[0]?.[0]).toMatchObject({ result: 'temperror', reason: 'store failed' });

    const closed = await scope.start({ plugins: plugins({ temperror: { action: 'tempfail' } }) });
    expect(await rcptCode(closed)).toBe('451 4.7.1');
  });

  it('will not start without a policy state store', async () => {
    await expect(
      scope.start({ plugins: ['greylist', ['rcpt-local', { domains: ['example.com'] }]] }),
    ).rejects.toThrow(/add the `policy-store` plugin/);
    // Listed after it is as good: the store is looked up once every plugin registered.
    const after = await scope.start({
      plugins: ['greylist', ['rcpt-local', { domains: ['example.com'] }], 'policy-store'],
    });
    expect(await rcptCode(after)).toBe('450 4.7.1');
  });
});
