/**
 * Greylisting and rate limits over real SMTP sessions on two servers (two
 * nodes) sharing their policy state in one PostgreSQL database through the
 * `policy-store-pg` plugin, on one injected clock: a triplet greylisted on
 * node A passes on node B after the delay; a message limit counts the
 * messages of both nodes.
 */
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestServer } from '../../core/testkit.ts';
import { connectFrom, FakeClock, MINUTE } from '../helpers/policy-state.ts';
import { freshSchema, usePostgres } from '../helpers/postgres.ts';
import { useScope } from '../helpers/scope.ts';
import { Relay } from '../helpers/tcp-relay.ts';

const scope = useScope();
const database = usePostgres();

/** A node: greylist and rate-limit on the shared store in `schema`. */
async function node(
  clock: FakeClock,
  schema: string,
  rules: readonly object[] = [],
  url?: string,
): Promise<TestServer> {
  return scope.start({
    clock,
    plugins: [
      [
        'policy-store-pg',
        { connectionString: url ?? (await database()), schema, poolSize: 2, connectTimeout: '2s' },
      ],
      ...(rules.length > 0 ? [['rate-limit', { rules }] as const] : [['greylist', {}] as const]),
      ['rcpt-local', { domains: ['example.com'] }],
    ],
  });
}

async function rcptCode(t: TestServer): Promise<string> {
  const c = await connectFrom(t);
  try {
    await c.expect('EHLO client.example.org', 250);
    await c.expect('MAIL FROM:<alice@example.org>', 250);
    const r = await c.command('RCPT TO:<bob@example.com>');
    await c.expect('QUIT', 221);
    return `${r.code} ${r.enhanced}`;
  } finally {
    await c.close();
  }
}

async function mail(c: SmtpClient): Promise<string> {
  await c.expect('RSET', 250);
  const r = await c.command('MAIL FROM:<alice@example.org>');
  return `${r.code} ${r.enhanced}`;
}

describe('policy state shared in PostgreSQL', () => {
  it('greylist: a triplet refused on node A is refused early on node B and passes on B after the delay', async () => {
    const clock = new FakeClock();
    const schema = freshSchema();
    const a = await node(clock, schema);
    const b = await node(clock, schema);
    expect(await rcptCode(a)).toBe('450 4.7.1');
    clock.advance(4 * MINUTE);
    expect(await rcptCode(b)).toBe('450 4.7.1');
    clock.advance(MINUTE);
    expect(await rcptCode(b)).toBe('250 2.1.5');
    expect(await rcptCode(a)).toBe('250 2.1.5');
  });

  it('rate-limit: a message limit of 3 an hour counts the messages of both nodes', async () => {
    const clock = new FakeClock();
    const schema = freshSchema();
    const rules = [{ key: 'ip', count: 'messages', limit: 3, per: '1h' }];
    const a = await node(clock, schema, rules);
    const b = await node(clock, schema, rules);
    const ca = await connectFrom(a);
    const cb = await connectFrom(b);
    scope.defer(() => ca.close());
    scope.defer(() => cb.close());
    await ca.expect('EHLO client.example.org', 250);
    await cb.expect('EHLO client.example.org', 250);
    expect(await mail(ca)).toBe('250 2.1.0');
    expect(await mail(cb)).toBe('250 2.1.0');
    expect(await mail(ca)).toBe('250 2.1.0');
    expect(await mail(cb)).toBe('450 4.7.1');
    expect(await mail(ca)).toBe('450 4.7.1');
    clock.advance(20 * MINUTE);
    expect(await mail(cb)).toBe('250 2.1.0');
    expect(await mail(ca)).toBe('450 4.7.1');
  });

  it('the database unreachable: greylist records temperror and accepts (its default action); once back, greylists again', async () => {
    const clock = new FakeClock();
    const url = new URL(await database());
    const relay = new Relay({ host: url.hostname, port: Number(url.port) });
    await relay.open();
    scope.defer(() => relay.cut());
    url.port = String(relay.port);
    const t = await node(clock, freshSchema(), [], url.toString());
    expect(await rcptCode(t)).toBe('450 4.7.1');
    await relay.cut();
    expect(await rcptCode(t)).toBe('250 2.1.5');
    await relay.open();
    clock.advance(MINUTE);
    expect(await rcptCode(t)).toBe('450 4.7.1');
  });
});
