/**
 * Limits and timeouts: command line length (RFC 5321 4.5.3.1.4), connections
 * in total and per address, errors per session, the command timeout and the
 * greeting delay with early-talker rejection.
 */
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { splitReplies } from '../helpers/raw-socket.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

/** Poll (by awaiting the server's own bookkeeping, not a fixed sleep) until `ok()`. */
async function until(ok: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('command line length', () => {
  it('accepts a 512-octet command line (CRLF included)', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    const line = `NOOP ${'x'.repeat(512 - 2 - 5)}`;
    expect(Buffer.byteLength(`${line}\r\n`)).toBe(512);
    await c.expect(line, 250, '2.0.0');
  });

  it('refuses a 513-octet line with 500 5.5.6 and the session survives', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    const line = `NOOP ${'x'.repeat(513 - 2 - 5)}`;
    expect(Buffer.byteLength(`${line}\r\n`)).toBe(513);
    await c.expect(line, 500, '5.5.6');
    await c.expect('NOOP', 250, '2.0.0');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  });

  it('counts octets, not characters, against the limit', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    // 300 two-octet characters: 300 characters but 600 octets.
    await c.expect(`NOOP ${'é'.repeat(300)}`, 500, '5.5.6');
    await c.expect('NOOP', 250, '2.0.0');
  });

  it('answers 100 KB without a line feed with exactly one 500 5.5.6 once the LF comes', async () => {
    const t = await scope.start();
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write('EHLO client.example\r\n');
    await raw.replies(1, mark);
    const start = raw.chunks.length;
    const chunk = 'A'.repeat(10 * 1024);
    for (let i = 0; i < 10; i++) raw.write(chunk);
    raw.write('\r\nNOOP\r\n');
    const text = await raw.replies(2, start);
    expect(splitReplies(text)).toEqual(['500 5.5.6 Line too long\r\n', '250 2.0.0 OK\r\n']);
    // Nothing else was answered for the long line.
    const next = raw.chunks.length;
    raw.write('QUIT\r\n');
    await raw.waitClosed();
    expect(splitReplies(raw.since(next))).toEqual(['221 2.0.0 Bye\r\n']);
  });

  it('honours a larger limits.maxLineLength', async () => {
    const t = await scope.start({ config: { limits: { maxLineLength: 1024 } } });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect(`NOOP ${'x'.repeat(1024 - 7)}`, 250, '2.0.0');
    await c.expect(`NOOP ${'x'.repeat(1024 - 6)}`, 500, '5.5.6');
  });
});

describe('connection limits', () => {
  it('refuses a third connection from one address with 421 4.7.0 (maxConnectionsPerIp: 2)', async () => {
    const t = await scope.start({ config: { limits: { maxConnectionsPerIp: 2 } } });
    const a = await scope.connect(t);
    const b = await scope.connect(t);
    expect([a.greeting?.code, b.greeting?.code]).toEqual([220, 220]);
    const c = await scope.connect(t, { waitGreeting: false });
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([421, '4.7.0']);
    await c.waitClosed();
    // The first two still work.
    await a.expect('NOOP', 250);
    await b.expect('NOOP', 250);
    // Once one leaves, its slot is free again.
    await a.expect('QUIT', 221);
    await a.waitClosed();
    await until(() => t.server.connections === 1, 'the server to count the closed session');
    const d = await scope.connect(t);
    expect(d.greeting?.code).toBe(220);
  });

  it('refuses connections beyond limits.maxConnections with 421 4.7.0', async () => {
    const t = await scope.start({ config: { limits: { maxConnections: 1 } } });
    const a = await scope.connect(t);
    expect(a.greeting?.code).toBe(220);
    const b = await scope.connect(t, { waitGreeting: false });
    const r = await b.read();
    expect([r.code, r.enhanced]).toEqual([421, '4.7.0']);
    await b.waitClosed();
    await a.expect('EHLO client.example', 250);
  });
});

describe('errors per session', () => {
  it('closes the session with 421 4.7.0 after limits.maxErrors error replies', async () => {
    const t = await scope.start({ config: { limits: { maxErrors: 3 } } });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('BOGUS1', 500, '5.5.2');
    await c.expect('NOOP', 250, '2.0.0');
    await c.expect('BOGUS2', 500, '5.5.2');
    await c.expect('RCPT TO:<x@y.example>', 503, '5.5.1');
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([421, '4.7.0']);
    await c.waitClosed();
    expect(c.pending).toBe('');
  });

  it('stops answering pipelined commands after the 421', async () => {
    const t = await scope.start({ config: { limits: { maxErrors: 3 } } });
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write('EHLO client.example\r\nX1\r\nX2\r\nX3\r\nNOOP\r\nNOOP\r\n');
    await raw.waitClosed();
    const replies = splitReplies(raw.since(mark));
    expect(replies.slice(1).map((r) => r.slice(0, 9))).toEqual([
      '500 5.5.2',
      '500 5.5.2',
      '500 5.5.2',
      '421 4.7.0',
    ]);
  });
});

describe('timeouts', () => {
  it('closes an idle session with 421 4.4.2 (timeouts.command)', async () => {
    const t = await scope.start({ config: { timeouts: { command: 300 } } });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    const r = await c.read(3000);
    expect([r.code, r.enhanced]).toEqual([421, '4.4.2']);
    await c.waitClosed();
  });

  it('does not time out a client that is waiting for a slow hook', async () => {
    const slow = definePlugin({
      name: 'slow-rcpt',
      schema: Type.Object({}),
      register(api) {
        api.hooks.rcpt.tap(() => new Promise<undefined>((resolve) => setTimeout(resolve, 700, undefined)));
      },
    });
    const t = await scope.start({
      plugins: [slow, ['rcpt-local', { domains: ['example.com'] }]],
      config: { timeouts: { command: 300 } },
    });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    // Idle on the client's side again: now the timeout applies.
    const r = await c.read(3000);
    expect([r.code, r.enhanced]).toEqual([421, '4.4.2']);
    await c.waitClosed();
  });

  it('times out a client that stalls in the middle of a command line', async () => {
    const t = await scope.start({ config: { timeouts: { command: 300 } } });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    c.send('NOO');
    const r = await c.read(3000);
    expect([r.code, r.enhanced]).toEqual([421, '4.4.2']);
    await c.waitClosed();
  });

  it('closes a session that stalls in DATA with 421 4.4.2 and queues nothing (timeouts.data)', async () => {
    const t = await scope.start({
      plugins: [['rcpt-local', { domains: ['example.com'] }]],
      config: { timeouts: { data: 300 } },
    });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    c.send('Subject: slow\r\n\r\npart');
    const r = await c.read(3000);
    expect([r.code, r.enhanced]).toEqual([421, '4.4.2']);
    await c.waitClosed();
    expect(t.queued).toHaveLength(0);
  });

  it('refuses a client that talks before the greeting with 554 and closes (timeouts.greetingDelay)', async () => {
    const t = await scope.start({ config: { timeouts: { greetingDelay: 300 } } });
    const c = await scope.connect(t, { waitGreeting: false });
    c.send('EHLO early.example\r\n');
    const r = await c.read(3000);
    expect(r.code).toBe(554);
    expect(r.raw).toMatch(/^554 /);
    await c.waitClosed();
    expect(c.pending).toBe('');
    expect(t.queued).toHaveLength(0);
  });

  it('greets a patient client after the greeting delay', async () => {
    const t = await scope.start({ config: { timeouts: { greetingDelay: 300 } } });
    const c = await scope.connect(t);
    expect(c.greeting?.code).toBe(220);
    await c.expect('EHLO client.example', 250);
  });

  it('accepts an early talker with smtp.rejectEarlyTalkers: false', async () => {
    const t = await scope.start({
      config: { timeouts: { greetingDelay: 300 }, smtp: { rejectEarlyTalkers: false } },
    });
    const c = await scope.connect(t, { waitGreeting: false });
    c.send('EHLO early.example\r\n');
    const greeting = await c.read(3000);
    expect(greeting.code).toBe(220);
    const ehlo = await c.read();
    expect(ehlo.code).toBe(250);
    await c.expect('NOOP', 250, '2.0.0');
  });
});

describe('closing replies end the session', () => {
  it('ignores everything pipelined after QUIT', async () => {
    const t = await scope.start({ plugins: [['rcpt-local', { domains: ['example.com'] }]] });
    const raw = await scope.raw(t);
    await raw.replies(1);
    const mark = raw.chunks.length;
    raw.write(
      'EHLO client.example\r\nQUIT\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: after quit\r\n\r\nx\r\n.\r\nNOOP\r\n',
    );
    await raw.waitClosed();
    const replies = splitReplies(raw.since(mark));
    expect(replies.slice(1)).toEqual(['221 2.0.0 Bye\r\n']);
    expect(t.queued).toHaveLength(0);
  });
});
