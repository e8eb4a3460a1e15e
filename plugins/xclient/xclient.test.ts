import Type from 'typebox';
import { afterEach, describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { startTestServer, type TestServer } from '../../core/testkit.ts';
import { parseXclient } from './index.ts';

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

function recorder(seen: string[]) {
  return definePlugin({
    name: 'record-client',
    schema: Type.Object({}),
    register(api) {
      api.hooks.connect.tap((s) => {
        seen.push(`connect ${s.remote.address}`);
        return undefined;
      });
      api.hooks.mail.tap((tx) => {
        seen.push(
          `mail ${tx.session.remote.address}:${tx.session.remote.port} user=${tx.session.user ?? '-'}`,
        );
        return undefined;
      });
    },
  });
}

describe('xclient', () => {
  it('parses attributes, xtext and [UNAVAILABLE]', () => {
    expect(parseXclient('ADDR=192.0.2.1 NAME=[UNAVAILABLE] HELO=mx+2Eexample')).toEqual(
      new Map<string, string | undefined>([
        ['ADDR', '192.0.2.1'],
        ['NAME', undefined],
        ['HELO', 'mx.example'],
      ]),
    );
    expect(parseXclient('')).toBeUndefined();
    expect(parseXclient('BOGUS=1')).toBeUndefined();
    expect(parseXclient('ADDR=1.2.3.4 ADDR=1.2.3.5')).toBeUndefined();
  });

  it('a trusted front end sets the client: new greeting, hooks see the real address', async () => {
    const seen: string[] = [];
    t = await startTestServer({ plugins: ['xclient', recorder(seen)] });
    const c = await t.connect();
    const ehlo = await c.expect('EHLO proxy.example', 250);
    expect(ehlo.lines).toContain('XCLIENT NAME ADDR PORT PROTO HELO LOGIN');
    const greeting = await c.command(
      'XCLIENT ADDR=IPV6:2001:db8::7 PORT=4242 LOGIN=alice NAME=client.example',
    );
    expect(greeting.code).toBe(220);
    // EHLO is needed again after the new greeting.
    await c.expect('MAIL FROM:<a@b.example>', 503);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    expect(seen).toEqual(['connect 127.0.0.1', 'connect 2001:db8::7', 'mail 2001:db8::7:4242 user=alice']);
    // An IPv4 client given as an IPv4-mapped IPv6 address is its IPv4 address, as for a direct client.
    await c.expect('RSET', 250);
    expect((await c.command('XCLIENT ADDR=IPV6:::FFFF:192.0.2.9')).code).toBe(220);
    expect(seen.at(-1)).toBe('connect 192.0.2.9');
    await c.close();
  });

  it('starts the session over: what plugins noted about the proxy connection is forgotten', async () => {
    const seen: string[] = [];
    const noter = definePlugin({
      name: 'noter',
      schema: Type.Object({}),
      register(api) {
        api.hooks.connect.tap((s) => {
          seen.push(`connect note=${String((s.notes as Record<string, unknown>).ehlo ?? '-')}`);
          return undefined;
        });
        api.hooks.ehlo.tap((s, helo) => {
          (s.notes as Record<string, unknown>).ehlo = helo.domain;
          return undefined;
        });
      },
    });
    t = await startTestServer({ plugins: ['xclient', noter] });
    const c = await t.connect();
    await c.expect('EHLO proxy.example', 250);
    expect((await c.command('XCLIENT ADDR=192.0.2.7')).code).toBe(220);
    expect(seen).toEqual(['connect note=-', 'connect note=-']);
    await c.close();
  });

  it('refuses untrusted clients, bad syntax, and use inside a transaction', async () => {
    t = await startTestServer({ plugins: [['xclient', { trustedNetworks: ['10.0.0.0/8'] }]] });
    const c = await t.connect();
    const ehlo = await c.expect('EHLO client.example', 250);
    expect(ehlo.lines.some((l) => l.startsWith('XCLIENT'))).toBe(false);
    await c.expect('XCLIENT ADDR=192.0.2.1', 550, '5.7.0');
    await c.close();
    await t.close();
    t = await startTestServer({ plugins: ['xclient', 'rcpt-local'] });
    const d = await t.connect();
    await d.expect('EHLO proxy.example', 250);
    await d.expect('XCLIENT ADDR=not-an-ip', 501, '5.5.4');
    await d.expect('XCLIENT', 501, '5.5.4');
    await d.expect('MAIL FROM:<a@b.example>', 250);
    await d.expect('XCLIENT ADDR=192.0.2.1', 503, '5.5.1');
    await d.close();
  });
});
