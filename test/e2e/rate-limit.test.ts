/**
 * Rate limits over real SMTP sessions, on an injected clock: a connection
 * limit answers 421 4.7.0 at connect and closes, message limits 450 4.7.1 at
 * MAIL, recipient limits 450 4.7.1 at RCPT; buckets refill as the clock
 * advances; per user, per sender domain, per recipient, per network;
 * exemptions; and many sessions racing on one bucket never over-admit.
 */
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { type SmtpClient, type TestPlugin, type TestServer, takeReply } from '../../core/testkit.ts';
import type { RateLimitResult } from '../../plugins/rate-limit/index.ts';
import { asyncStore, brokenStore, connectFrom, FakeClock, MINUTE } from '../helpers/policy-state.ts';
import { useScope } from '../helpers/scope.ts';
import { resultsProbe } from '../helpers/test-plugins.ts';

const scope = useScope();

type Rule = Record<string, unknown>;

async function start(
  rules: readonly Rule[],
  o: {
    clock?: FakeClock;
    config?: Record<string, unknown>;
    before?: readonly TestPlugin[];
    after?: readonly TestPlugin[];
  } = {},
): Promise<TestServer> {
  return scope.start({
    clock: o.clock ?? new FakeClock(),
    plugins: [
      'policy-store',
      ...(o.before ?? []),
      ['rate-limit', { rules, ...o.config }],
      ['rcpt-local', { domains: ['example.com'] }],
      ...(o.after ?? []),
    ],
  });
}

/** Authenticates each session as the first label of its EHLO name (`alice.example.org` is `alice`). */
const userFromEhlo = definePlugin({
  name: 'test-user-from-ehlo',
  schema: Type.Object({}),
  register(api) {
    api.hooks.ehlo.tap((session, helo) => {
      session.authenticate(helo.domain.split('.')[0] as string);
      return undefined;
    });
  },
});

async function session(t: TestServer, client?: string, ehlo = 'client.example.org'): Promise<SmtpClient> {
  const c = await connectFrom(t, client);
  scope.defer(() => c.close());
  expect(c.greeting?.code).toBe(220);
  await c.expect(`EHLO ${ehlo}`, 250);
  return c;
}

/** MAIL FROM in an open session (after RSET): its code and enhanced code. */
async function mail(c: SmtpClient, from = 'alice@example.org'): Promise<string> {
  await c.expect('RSET', 250);
  const r = await c.command(`MAIL FROM:<${from}>`);
  return `${r.code} ${r.enhanced}`;
}

async function rcpt(c: SmtpClient, to = 'bob@example.com'): Promise<string> {
  const r = await c.command(`RCPT TO:<${to}>`);
  return `${r.code} ${r.enhanced}`;
}

/** Connect and read the first reply: `220` or the refusal. */
async function greeting(t: TestServer, client?: string): Promise<string> {
  const c = await connectFrom(t, client);
  scope.defer(() => c.close());
  const g = c.greeting;
  if (g?.code === 421) await c.waitClosed();
  return `${g?.code} ${g?.enhanced ?? ''}`.trim();
}

describe('rate-limit', () => {
  it('answers 421 4.7.0 at connect over a connection limit, closes, and admits again as the bucket refills', async () => {
    const clock = new FakeClock();
    const t = await start([{ key: 'ip', count: 'connections', limit: 2, per: '1m' }], { clock });
    expect(await greeting(t)).toBe('220');
    expect(await greeting(t)).toBe('220');
    const c = await connectFrom(t);
    // No enhanced code before EHLO (RFC 2034): the reply's 4.7.0 shows only after it.
    expect(c.greeting?.raw).toBe('421 Too many connections, try again later\r\n');
    await c.waitClosed();
    // Another client address has a bucket of its own.
    expect(await greeting(t, '127.0.0.2')).toBe('220');
    clock.advance(30_000); // 2 a minute: one token back
    expect(await greeting(t)).toBe('220');
    expect(await greeting(t)).toBe('421');
  });

  it('refuses the connection with 554 when the action is reject, and only records with tag', async () => {
    const rule = { key: 'ip', count: 'connections', limit: 1, per: '1h' };
    const reject = await start([rule], { config: { actions: { fail: { action: 'reject' } } } });
    expect(await greeting(reject)).toBe('220');
    const refused = await connectFrom(reject);
    scope.defer(() => refused.close());
    expect(refused.greeting?.raw).toBe('554 Too many connections\r\n');
    expect((await refused.command('MAIL FROM:<a@example.org>')).code).toBe(503);

    const tag = await start([rule], { config: { actions: { fail: { action: 'tag' } } } });
    expect(await greeting(tag)).toBe('220');
    expect(await greeting(tag)).toBe('220');
  });

  it('answers 450 4.7.1 at MAIL over a message limit, with the wait', async () => {
    const clock = new FakeClock();
    const t = await start([{ key: 'ip', count: 'messages', limit: 2, per: '1h' }], { clock });
    const c = await session(t);
    expect(await mail(c)).toBe('250 2.1.0');
    expect(await mail(c)).toBe('250 2.1.0');
    await c.expect('RSET', 250);
    expect((await c.command('MAIL FROM:<alice@example.org>')).raw).toBe(
      '450 4.7.1 Too many messages, try again in 30m\r\n',
    );
    clock.advance(30 * MINUTE);
    expect(await mail(c)).toBe('250 2.1.0');
    expect(await mail(c)).toBe('450 4.7.1');
  });

  it('answers 450 4.7.1 at RCPT over a recipient limit', async () => {
    const clock = new FakeClock();
    const t = await start([{ key: 'ip', count: 'recipients', limit: 3, per: '1h', burst: 2 }], { clock });
    const c = await session(t);
    expect(await mail(c)).toBe('250 2.1.0');
    expect(await rcpt(c, 'a@example.com')).toBe('250 2.1.5');
    expect(await rcpt(c, 'b@example.com')).toBe('250 2.1.5');
    expect((await c.command('RCPT TO:<c@example.com>')).raw).toBe(
      '450 4.7.1 Too many recipients, try again in 20m\r\n',
    );
    clock.advance(20 * MINUTE);
    expect(await rcpt(c, 'c@example.com')).toBe('250 2.1.5');
    // The burst caps what an hour of quiet gives back.
    clock.advance(60 * MINUTE);
    expect(await rcpt(c, 'd@example.com')).toBe('250 2.1.5');
    expect(await rcpt(c, 'e@example.com')).toBe('250 2.1.5');
    expect(await rcpt(c, 'f@example.com')).toBe('450 4.7.1');
  });

  it('counts per authenticated user', async () => {
    const t = await start([{ key: 'user', count: 'messages', limit: 1, per: '1h' }], {
      before: [userFromEhlo],
    });
    const alice = await session(t, undefined, 'alice.example.org');
    expect(await mail(alice)).toBe('250 2.1.0');
    const alice2 = await session(t, '127.0.0.2', 'alice.example.org');
    expect(await mail(alice2)).toBe('450 4.7.1');
    const bob = await session(t, undefined, 'bob.example.org');
    expect(await mail(bob)).toBe('250 2.1.0');
  });

  it('counts per sender domain, and messages per recipient at RCPT', async () => {
    const t = await start([
      { key: 'senderDomain', count: 'messages', limit: 1, per: '1h' },
      { key: 'recipient', count: 'messages', limit: 1, per: '1h' },
    ]);
    const c = await session(t);
    expect(await mail(c, 'a@example.org')).toBe('250 2.1.0');
    expect(await rcpt(c, 'bob@example.com')).toBe('250 2.1.5');
    expect(await mail(c, 'b@EXAMPLE.org')).toBe('450 4.7.1');
    expect(await mail(c, 'c@example.net')).toBe('250 2.1.0');
    expect(await rcpt(c, 'Bob@example.com')).toBe('450 4.7.1');
    expect(await rcpt(c, 'carol@example.com')).toBe('250 2.1.5');
    // Nor does the null sender have a domain to count.
    expect(await mail(c, '')).toBe('250 2.1.0');
  });

  it('counts per network: 127.0.0.2 and 127.0.0.3 share a /24', async () => {
    const t = await start([{ key: 'network', count: 'connections', limit: 1, per: '1h' }]);
    expect(await greeting(t, '127.0.0.2')).toBe('220');
    expect(await greeting(t, '127.0.0.3')).toBe('421');
  });

  it('exempts listed networks and, when asked, authenticated sessions', async () => {
    const rules = [{ key: 'ip', count: 'messages', limit: 1, per: '1h' }];
    const t = await start(rules, { config: { exempt: { networks: ['127.0.0.2/32'] } } });
    const listed = await session(t, '127.0.0.2');
    for (let i = 0; i < 3; i++) expect(await mail(listed)).toBe('250 2.1.0');
    const other = await session(t, '127.0.0.3');
    expect(await mail(other)).toBe('250 2.1.0');
    expect(await mail(other)).toBe('450 4.7.1');

    const auth = await start(rules, { config: { exempt: { authenticated: true } }, before: [userFromEhlo] });
    const alice = await session(auth, undefined, 'alice.example.org');
    for (let i = 0; i < 3; i++) expect(await mail(alice)).toBe('250 2.1.0');
  });

  it('records its result for policy', async () => {
    const seen: RateLimitResult[][] = [];
    const t = await start([{ key: 'ip', count: 'messages', limit: 5, per: '1h' }], {
      after: [resultsProbe('rate-limit', (r) => seen.push([...r]))],
    });
    const c = await session(t);
    expect(await mail(c)).toBe('250 2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\nx')).code).toBe(250);
    expect(seen).toEqual([[{ result: 'pass' }]]);
  });

  it('admits exactly the limit when many connections race for one bucket', async () => {
    const t = await start([{ key: 'ip', count: 'connections', limit: 5, per: '1h' }]);
    const n = 20;
    const greetings = await Promise.all(
      Array.from({ length: n }, async () => {
        const socket = netConnect({ port: t.port, host: t.host });
        scope.defer(() => socket.destroy());
        await once(socket, 'connect');
        let text = '';
        socket.setEncoding('utf8');
        for await (const chunk of socket) {
          text += chunk as string;
          const r = takeReply(text);
          if (r) return r.reply.code;
        }
        return 0;
      }),
    );
    expect(greetings.filter((code) => code === 220)).toHaveLength(5);
    expect(greetings.filter((code) => code === 421)).toHaveLength(n - 5);
  });

  it('works the same on a store that answers with promises (as a database store does)', async () => {
    const clock = new FakeClock();
    const t = await scope.start({
      clock,
      plugins: [
        asyncStore,
        [
          'rate-limit',
          {
            rules: [
              { key: 'ip', count: 'connections', limit: 2, per: '1h' },
              { key: 'ip', count: 'messages', limit: 5, per: '1h' },
              { key: 'senderDomain', count: 'messages', limit: 1, per: '1h' },
              { key: 'ip', count: 'recipients', limit: 1, per: '1h' },
            ],
          },
        ],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const c = await session(t);
    expect(await mail(c, 'a@example.org')).toBe('250 2.1.0');
    expect(await rcpt(c, 'a@example.com')).toBe('250 2.1.5');
    expect(await rcpt(c, 'b@example.com')).toBe('450 4.7.1');
    // The second rule (sender domain) refuses after the first took its token.
    expect(await mail(c, 'b@example.org')).toBe('450 4.7.1');
    expect(await greeting(t)).toBe('220');
    expect(await greeting(t)).toBe('421');
  });

  it('fails open when the store fails', async () => {
    const t = await scope.start({
      plugins: [
        brokenStore,
        [
          'rate-limit',
          {
            rules: [
              { key: 'ip', count: 'connections', limit: 1, per: '1h' },
              { key: 'ip', count: 'messages', limit: 1, per: '1h' },
            ],
          },
        ],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const c = await session(t);
    expect(await mail(c)).toBe('250 2.1.0');
    expect(await mail(c)).toBe('250 2.1.0');
  });

  it('refuses a connection rule on a key unknown at connect', async () => {
    await expect(start([{ key: 'user', count: 'connections', limit: 1, per: '1m' }])).rejects.toThrow(
      /only `ip` and `network` are known, not `user`/,
    );
  });
});
