import { connect } from 'node:net';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { parseProxyHeader } from '../../core/proxy-protocol.ts';
import { SmtpClient } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

/** Records the client address every connect hook sees. */
function recorder(seen: string[]) {
  return definePlugin({
    name: 'record-remote',
    schema: Type.Object({}),
    register(api) {
      api.hooks.connect.tap((session) => {
        seen.push(`${session.remote.address}:${session.remote.port}`);
        return undefined;
      });
    },
  });
}

async function rawClient(port: number, header: Buffer | string): Promise<SmtpClient> {
  const socket = connect({ port, host: '127.0.0.1' });
  await new Promise<void>((ok, fail) => {
    socket.once('connect', ok);
    socket.once('error', fail);
  });
  socket.write(header);
  return new SmtpClient(socket);
}

function v2Header(src: string, dst: string, sport: number, dport: number): Buffer {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  const head = Buffer.from([0x21, 0x11, 0x00, 12]);
  const addr = Buffer.alloc(12);
  for (const [i, o] of src.split('.').entries()) addr.writeUInt8(Number(o), i);
  for (const [i, o] of dst.split('.').entries()) addr.writeUInt8(Number(o), 4 + i);
  addr.writeUInt16BE(sport, 8);
  addr.writeUInt16BE(dport, 10);
  return Buffer.concat([sig, head, addr]);
}

describe('PROXY protocol', () => {
  it('parses v1 and v2 headers and rejects junk', () => {
    const v1 = parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO'));
    expect(v1).toMatchObject({
      kind: 'ok',
      consumed: 44,
      header: { remote: { address: '192.0.2.7', port: 40000 } },
    });
    // An IPv4-mapped address reported over TCP6 is the IPv4 address, as for a direct client.
    expect(parseProxyHeader(Buffer.from('PROXY TCP6 ::ffff:192.0.2.7 ::1 40000 25\r\n'))).toMatchObject({
      header: { remote: { address: '192.0.2.7' }, local: { address: '::1' } },
    });
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.7'))).toEqual({ kind: 'need-more' });
    expect(parseProxyHeader(Buffer.from('EHLO x\r\n')).kind).toBe('invalid');
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 999.0.2.7 198.51.100.1 1 25\r\n')).kind).toBe('invalid');
    const v2 = parseProxyHeader(v2Header('203.0.113.9', '198.51.100.1', 5555, 25));
    expect(v2).toMatchObject({
      kind: 'ok',
      consumed: 28,
      header: { remote: { address: '203.0.113.9', port: 5555 } },
    });
  });

  it('hooks see the address the trusted proxy reports (v1, with pipelined EHLO in the same packet)', async () => {
    const seen: string[] = [];
    const t = await scope.start({
      plugins: [recorder(seen)],
      config: { listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0, proxyProtocol: true }] },
    });
    const c = await rawClient(t.port, 'PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n');
    expect((await c.read()).code).toBe(220);
    expect(seen).toEqual(['192.0.2.7:40000']);
    await c.expect('EHLO proxied.example', 250);
    await c.close();
  });

  it('accepts v2 binary headers', async () => {
    const seen: string[] = [];
    const t = await scope.start({
      plugins: [recorder(seen)],
      config: { listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0, proxyProtocol: true }] },
    });
    const c = await rawClient(t.port, v2Header('203.0.113.9', '198.51.100.1', 5555, 25));
    expect((await c.read()).code).toBe(220);
    expect(seen).toEqual(['203.0.113.9:5555']);
    await c.close();
  });

  it('disconnects peers that are not trusted proxies, and bad headers', async () => {
    let t = await scope.start({
      config: {
        listeners: [
          { name: 'smtp', host: '127.0.0.1', port: 0, proxyProtocol: true, trustedProxies: ['10.0.0.0/8'] },
        ],
      },
    });
    const c = await rawClient(t.port, 'PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n');
    await c.waitClosed();
    expect(c.pending).toBe('');
    await t.close();
    t = await scope.start({
      config: { listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0, proxyProtocol: true }] },
    });
    const d = await rawClient(t.port, 'EHLO sneaky.example\r\n');
    await d.waitClosed();
    expect(d.pending).toBe('');
  });
});
