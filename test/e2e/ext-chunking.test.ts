/**
 * CHUNKING (RFC 3030): BDAT over raw sockets. Chunks are stored byte for byte
 * (no dot-unstuffing, CRLF.CRLF is just data), every chunk is consumed even
 * when refused so the stream stays in step, and BDAT and DATA never mix.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import type {
  CapturedMessage,
  SmtpClient,
  SmtpReply,
  TestPlugin,
  TestServerOptions,
} from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

async function start(extra: readonly TestPlugin[] = [], config?: TestServerOptions['config']) {
  const server = await scope.start({
    plugins: ['chunking', LOCAL, ...extra],
    ...(config ? { config } : {}),
  });
  const client = await scope.connect(server);
  return { server, client };
}

async function transaction(client: SmtpClient): Promise<void> {
  await client.expect('EHLO client.example', 250);
  await client.expect('MAIL FROM:<a@b.example>', 250);
  await client.expect('RCPT TO:<bob@example.com>', 250);
}

/** `BDAT <n> [LAST]` and its chunk in one write. */
function bdat(data: string | Buffer, last = false): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  return Buffer.concat([Buffer.from(`BDAT ${bytes.length}${last ? ' LAST' : ''}\r\n`), bytes]);
}

function codes(r: SmtpReply): [number, string | undefined] {
  return [r.code, r.enhanced];
}

/** The message as the client sent it: everything after the core's Received header. */
function afterReceived(m: CapturedMessage): Buffer {
  const end = /\r\n(?![ \t])/.exec(m.data.toString('latin1'));
  if (!end) throw new Error('no header end');
  return m.data.subarray(end.index + 2);
}

describe('CHUNKING', () => {
  it('advertises CHUNKING', async () => {
    const { client } = await start();
    const ehlo = await client.expect('EHLO client.example', 250);
    expect(ehlo.lines).toContain('CHUNKING');
  });

  it('stores a one-chunk message byte for byte: dots and CRLF.CRLF are data', async () => {
    const { server, client } = await start();
    await transaction(client);
    const content = 'Subject: dots\r\n\r\n.\r\n..two\r\n.lone\r\nend\r\n.\r\n\r\n.\r\nQUIT\r\n';
    client.send(bdat(content, true));
    const r = await client.read();
    expect(codes(r)).toEqual([250, '2.0.0']);
    const [m] = await server.waitForMessages(1);
    expect(afterReceived(m!).toString('utf8')).toBe(content);
    await client.expect('NOOP', 250);
  });

  it('answers each pipelined chunk and joins them in order', async () => {
    const { server, client } = await start();
    await transaction(client);
    client.send(
      Buffer.concat([bdat('Subject: x\r\n\r\nhel'), bdat(''), bdat('lo\r\n'), bdat(' \r\n', true)]),
    );
    const [a, b, d, last] = await client.readMany(4);
    expect(a?.raw).toBe('250 2.0.0 17 octets received\r\n');
    expect(b?.raw).toBe('250 2.0.0 0 octets received\r\n');
    expect(d?.raw).toBe('250 2.0.0 4 octets received\r\n');
    expect(codes(last!)).toEqual([250, '2.0.0']);
    const [m] = await server.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: x\r\n\r\nhello\r\n \r\n');
  });

  it('accepts an empty message: BDAT 0 LAST', async () => {
    const { server, client } = await start();
    await transaction(client);
    client.send('BDAT 0 LAST\r\n');
    expect(codes(await client.read())).toEqual([250, '2.0.0']);
    const [m] = await server.waitForMessages(1);
    expect(afterReceived(m!).length).toBe(0);
    expect(m?.text).toMatch(/^Received: from client\.example/);
  });

  it('reads and discards a chunk sent before EHLO (503 5.5.1)', async () => {
    const { client } = await start();
    client.send(bdat('QUIT\r\n'));
    expect(codes(await client.read())).toEqual([503, undefined]);
    await client.expect('EHLO client.example', 250);
  });

  it('reads and discards a chunk without a transaction (503 5.5.1)', async () => {
    const { client } = await start();
    await client.expect('EHLO client.example', 250);
    client.send(bdat('QUIT\r\nQUIT\r\n', true));
    expect(codes(await client.read())).toEqual([503, '5.5.1']);
    await client.expect('NOOP', 250);
  });

  it('reads and discards a chunk without recipients (554 5.5.1)', async () => {
    const { server, client } = await start();
    await client.expect('EHLO client.example', 250);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<x@elsewhere.example>', 550);
    client.send(bdat('RCPT TO:<bob@example.com>\r\n', true));
    expect(codes(await client.read())).toEqual([554, '5.5.1']);
    await client.expect('RSET', 250);
    expect(server.queued).toHaveLength(0);
  });

  it('answers 501 5.5.4 to a bad end marker, discards the chunk, and fails the transaction until RSET', async () => {
    const { server, client } = await start();
    await transaction(client);
    client.send(bdat('first'));
    expect(codes(await client.read())).toEqual([250, '2.0.0']);
    client.send(Buffer.concat([Buffer.from('BDAT 6 LASTX\r\n'), Buffer.from('QUIT\r\n')]));
    expect(codes(await client.read())).toEqual([501, '5.5.4']);
    client.send(bdat('rest', true));
    expect(codes(await client.read())).toEqual([501, '5.5.4']);
    await client.expect('RSET', 250);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com>', 250);
    client.send(bdat('clean', true));
    expect(codes(await client.read())).toEqual([250, '2.0.0']);
    const [m] = await server.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('clean');
    expect(server.queued).toHaveLength(1);
  });

  it('closes with 421 when the chunk size cannot be read', async () => {
    for (const line of ['BDAT', 'BDAT abc', 'BDAT -1 LAST', 'BDAT 12345678901234567 LAST', 'BDAT LAST']) {
      const { server, client } = await start();
      await transaction(client);
      client.send(`${line}\r\nRSET\r\n`);
      const r = await client.read();
      expect(codes(r), line).toEqual([421, '4.5.0']);
      await client.waitClosed();
      await server.close();
    }
  });

  it('refuses DATA after BDAT in the same transaction (503 5.5.1), and BDAT goes on', async () => {
    const { server, client } = await start();
    await transaction(client);
    client.send(bdat('part1 '));
    expect((await client.read()).code).toBe(250);
    await client.expect('DATA', 503, '5.5.1');
    client.send(bdat('part2', true));
    expect(codes(await client.read())).toEqual([250, '2.0.0']);
    const [m] = await server.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('part1 part2');
  });

  it('refuses DATA after a refused BDAT in the same transaction', async () => {
    const { client } = await start();
    await transaction(client);
    client.send('BDAT 3 LASTX\r\nabc');
    expect((await client.read()).code).toBe(501);
    await client.expect('DATA', 503, '5.5.1');
  });

  it('discards the chunks received so far on RSET', async () => {
    const { server, client } = await start();
    await transaction(client);
    client.send(bdat('discarded '));
    expect((await client.read()).code).toBe(250);
    await client.expect('RSET', 250);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com>', 250);
    client.send(bdat('kept', true));
    expect((await client.read()).code).toBe(250);
    const [m] = await server.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('kept');
  });

  it('sends a later transaction on the same connection through DATA', async () => {
    const { server, client } = await start();
    await transaction(client);
    client.send(bdat('by bdat', true));
    expect((await client.read()).code).toBe(250);
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com>', 250);
    await client.expect('DATA', 354);
    expect((await client.sendData('by data')).code).toBe(250);
    const [first, second] = await server.waitForMessages(2);
    expect(afterReceived(first!).toString()).toBe('by bdat');
    expect(afterReceived(second!).toString()).toBe('by data\r\n');
  });

  it('answers 552 5.3.4 at LAST to one chunk larger than the limit, after reading it all', async () => {
    const { server, client } = await start([], { limits: { maxMessageSize: 1024 } });
    await transaction(client);
    client.send(bdat(`${'z'.repeat(1500)}\r\nQUIT\r\n`, true));
    expect(codes(await client.read())).toEqual([552, '5.3.4']);
    await client.expect('NOOP', 250);
    expect(server.queued).toHaveLength(0);
  });

  it('takes a large chunk sent with its command while a data hook is still deciding', async () => {
    const slow = definePlugin({
      name: 'test-slow-data',
      schema: Type.Object({}),
      register(api) {
        api.hooks.data.tap(async () => {
          await new Promise((r) => setTimeout(r, 100));
          return undefined;
        });
      },
    });
    const { server, client } = await start([slow]);
    await transaction(client);
    const content = Buffer.alloc(300_000, 0x61);
    client.send(bdat(content, true));
    expect(codes(await client.read(8000))).toEqual([250, '2.0.0']);
    const [m] = await server.waitForMessages(1);
    expect(afterReceived(m!).equals(content)).toBe(true);
  });

  // Skipped until the core ends a pending chunk read when the client goes away: today the
  // BDAT handler never returns, the chunked message's spool file stays behind and the
  // transaction's reset hook never runs (see SmtpSession.finalize).
  it('leaves no spool file behind when the client disconnects in the middle of a chunk', async () => {
    const { server, client } = await start();
    await transaction(client);
    // More than the spool's in-memory limit, so the chunk spills to a file.
    client.send(Buffer.concat([Buffer.from('BDAT 400000\r\n'), Buffer.alloc(300_000, 0x61)]));
    const spool = join(server.server.dataDir, 'spool');
    for (let i = 0; i < 50 && (await readdir(spool)).length === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await readdir(spool)).toHaveLength(1);
    client.socket.destroy();
    await client.waitClosed();
    for (let i = 0; i < 50 && (await readdir(spool)).length > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await readdir(spool)).toEqual([]);
  });
});
