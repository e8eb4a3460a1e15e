/**
 * The LMTP listener role (RFC 2033): LHLO instead of HELO/EHLO, and after the
 * message one reply per accepted recipient, in RCPT order (DATA and BDAT),
 * over raw sockets with pipelining; and a second mailframe server's
 * `deliver-lmtp` delivering into it over a Unix socket.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { createAjv, validateCoreConfig } from '../../core/config.ts';
import { isReply } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { TestPlugin, TestServer } from '../../core/testkit.ts';
import { type RawSocket, splitReplies } from '../helpers/raw-socket.ts';
import { useScope } from '../helpers/scope.ts';
import { deliveryJob, startDeliveryServer } from './deliver-helpers.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'], mailboxes: ['bob', 'carol', 'dave'] }] as const;
const LMTP_LISTENER = { name: 'lmtp', host: '127.0.0.1', port: 0, protocol: 'lmtp' } as const;

/** Refuses, at the `message` hook, a message whose subject says so; records the protocol plugins saw. */
const seen: string[] = [];
const policy = definePlugin({
  name: 'test-policy',
  schema: Type.Object({}),
  register(api) {
    api.hooks.ehlo.tap((session, helo) => {
      seen.push(`${session.listener.protocol} ${helo.verb}`);
      return undefined;
    });
    api.hooks.message.tap(async (_tx, message) => {
      const text = (await message.read()).toString('latin1');
      return text.includes('Subject: refuse me') ? reply(550, '5.7.1', 'Refused by policy') : undefined;
    });
  },
});

async function startLmtp(plugins: readonly TestPlugin[] = []): Promise<TestServer> {
  return scope.start({ plugins: [LOCAL, policy, ...plugins], config: { listeners: [LMTP_LISTENER] } });
}

/** Send `text` in one write and wait for `n` replies; returns them. */
async function send(raw: RawSocket, text: string, n: number): Promise<string[]> {
  const mark = raw.chunks.length;
  raw.write(text);
  return splitReplies(await raw.replies(n, mark));
}

const codes = (replies: readonly string[]) => replies.map((r) => r.slice(0, 9));

describe('LMTP listener', () => {
  it('greets, answers LHLO with the extensions EHLO would offer, and refuses HELO and EHLO', async () => {
    seen.length = 0;
    const t = await startLmtp(['chunking']);
    const raw = await scope.raw(t);
    await raw.replies(1);
    const [helo, ehlo, mail] = await send(
      raw,
      'HELO client.example\r\nEHLO client.example\r\nMAIL FROM:<a@b.example>\r\n',
      3,
    );
    expect(helo).toMatch(/^500 /);
    expect(ehlo).toMatch(/^500 /);
    expect(mail).toMatch(/^503 .*LHLO/);
    const [lhlo] = await send(raw, 'LHLO client.example\r\n', 1);
    expect(lhlo).toMatch(/^250-/);
    expect(lhlo).toContain('PIPELINING');
    expect(lhlo).toContain('ENHANCEDSTATUSCODES');
    expect(lhlo).toContain('CHUNKING');
    // With enhanced status codes in effect, the refusals carry them.
    const [again] = await send(raw, 'EHLO client.example\r\n', 1);
    expect(again).toMatch(/^500 5\.5\.1 /);
    expect(seen).toEqual(['lmtp LHLO']);
  });

  it('does not know LHLO on an SMTP listener', async () => {
    const t = await scope.start({ plugins: [LOCAL] });
    const raw = await scope.raw(t);
    await raw.replies(1);
    expect(await send(raw, 'LHLO client.example\r\n', 1)).toEqual(['500 Command not recognized\r\n']);
  });

  it('answers once per accepted recipient after the final dot, in RCPT order, all pipelined', async () => {
    const t = await startLmtp();
    const raw = await scope.raw(t);
    await raw.replies(1);
    await send(raw, 'LHLO client.example\r\n', 1);
    const replies = await send(
      raw,
      [
        'MAIL FROM:<a@b.example>',
        'RCPT TO:<bob@example.com>',
        'RCPT TO:<nobody@example.com>',
        'RCPT TO:<carol@example.com>',
        'RCPT TO:<dave@example.com>',
        'DATA',
        'Subject: hello\r\n\r\nbody\r\n.',
        'NOOP',
        '',
      ].join('\r\n'),
      10,
    );
    expect(codes(replies)).toEqual([
      '250 2.1.0',
      '250 2.1.5',
      '550 5.1.1',
      '250 2.1.5',
      '250 2.1.5',
      '354 End d',
      '250 2.0.0',
      '250 2.0.0',
      '250 2.0.0',
      '250 2.0.0',
    ]);
    // Each reply names its recipient, in RCPT order; then the NOOP's.
    expect(replies[6]).toMatch(/^250 2\.0\.0 <bob@example\.com> /);
    expect(replies[7]).toMatch(/^250 2\.0\.0 <carol@example\.com> /);
    expect(replies[8]).toMatch(/^250 2\.0\.0 <dave@example\.com> /);
    expect(replies[9]).toBe('250 2.0.0 OK\r\n');
    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toEqual(['bob@example.com', 'carol@example.com', 'dave@example.com']);
    expect(m?.text).toMatch(/with LMTP id /);
  });

  it('gives every recipient the refusal of a refused message', async () => {
    const t = await startLmtp();
    const raw = await scope.raw(t);
    await raw.replies(1);
    await send(raw, 'LHLO client.example\r\n', 1);
    const envelope =
      'MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n';
    const policyRefusal = await send(raw, `${envelope}Subject: refuse me\r\n\r\nbody\r\n.\r\n`, 6);
    expect(codes(policyRefusal.slice(4))).toEqual(['550 5.7.1', '550 5.7.1']);
    // A core refusal (the header limit) too, and the session goes on.
    const big = `${'X-Filler: 0123456789012345678901234567890123456789\r\n'.repeat(3000)}\r\nbody\r\n.\r\n`;
    const limitRefusal = await send(raw, `${envelope}${big}`, 6);
    expect(codes(limitRefusal.slice(4))).toEqual(['552 5.3.4', '552 5.3.4']);
    expect(t.queued).toHaveLength(0);
  });

  it('counts a refused message once toward limits.maxErrors, however many recipients it had', async () => {
    const t = await scope.start({
      plugins: [LOCAL, policy],
      config: { listeners: [LMTP_LISTENER], limits: { maxErrors: 3 } },
    });
    const raw = await scope.raw(t);
    await raw.replies(1);
    await send(raw, 'LHLO client.example\r\n', 1);
    const rcpts =
      'RCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\nRCPT TO:<dave@example.com>\r\n';
    const replies = await send(
      raw,
      `MAIL FROM:<a@b.example>\r\n${rcpts}RCPT TO:<bob@example.com>\r\nDATA\r\nSubject: refuse me\r\n\r\n.\r\nNOOP\r\n`,
      11,
    );
    expect(codes(replies.slice(6))).toEqual([
      '550 5.7.1',
      '550 5.7.1',
      '550 5.7.1',
      '550 5.7.1',
      '250 2.0.0',
    ]);
  });

  it('refuses DATA with 503 when no recipient was accepted (RFC 2033 4.2)', async () => {
    const t = await startLmtp();
    const raw = await scope.raw(t);
    await raw.replies(1);
    await send(raw, 'LHLO client.example\r\n', 1);
    const replies = await send(raw, 'MAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n', 3);
    expect(codes(replies)).toEqual(['250 2.1.0', '550 5.1.1', '503 5.5.1']);
  });

  it('answers BDAT LAST once per accepted recipient', async () => {
    const t = await startLmtp(['chunking']);
    const raw = await scope.raw(t);
    await raw.replies(1);
    await send(raw, 'LHLO client.example\r\n', 1);
    const body = 'Subject: chunked\r\n\r\nbody\r\n';
    const replies = await send(
      raw,
      `MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\nBDAT 6\r\nSubjecBDAT ${body.length - 6} LAST\r\n${body.slice(6)}NOOP\r\n`,
      7,
    );
    expect(codes(replies)).toEqual([
      '250 2.1.0',
      '250 2.1.5',
      '250 2.1.5',
      '250 2.0.0',
      '250 2.0.0',
      '250 2.0.0',
      '250 2.0.0',
    ]);
    expect(replies[4]).toMatch(/<bob@example\.com>/);
    expect(replies[5]).toMatch(/<carol@example\.com>/);
    expect(await t.waitForMessages(1)).toHaveLength(1);
  });

  it.each([
    ['DATA', false],
    ['BDAT', true],
  ])(
    "takes mail from another mailframe's deliver-lmtp over a Unix socket (%s), with per-recipient results",
    async (_verb, chunking) => {
      const dir = await mkdtemp(join(tmpdir(), 'mailframe-lmtp-'));
      scope.defer(() => rm(dir, { recursive: true, force: true }));
      const path = join(dir, 'lmtp.sock');
      const t = await scope.start({
        // With CHUNKING offered, deliver-lmtp sends the message with BDAT.
        plugins: [LOCAL, policy, ...(chunking ? ['chunking'] : [])],
        config: { listeners: [{ name: 'lmtp', path, pathMode: '0660', protocol: 'lmtp' }] },
      });
      const st = await stat(path);
      expect(st.isSocket()).toBe(true);
      expect(st.mode & 0o777).toBe(0o660);
      const relay = await startDeliveryServer([
        {
          plugin: 'deliver-lmtp',
          config: {
            socket: path,
            domains: ['example.com'],
            chunking,
            timeouts: { connect: 2000, command: 2000 },
          },
        },
      ]);
      scope.defer(() => relay.close());
      const message = `Subject: via lmtp\r\n\r\n${'body line\r\n'.repeat(5000)}.dot\r\n`;
      const report = await relay.server.outbound.deliver(
        deliveryJob({ to: ['bob@example.com', 'nobody@example.com', 'carol@example.com'], message }),
      );
      if (report === undefined || isReply(report)) throw new Error(`no report: ${JSON.stringify(report)}`);
      expect(report.results.map((r) => [r.recipient, r.status, r.reply?.code])).toEqual([
        ['bob@example.com', 'delivered', 250],
        ['nobody@example.com', 'failed', 550],
        ['carol@example.com', 'delivered', 250],
      ]);
      expect(report.results[0]?.reply?.text).toContain('<bob@example.com>');
      expect(report.results[2]?.reply?.text).toContain('<carol@example.com>');
      const [m] = await t.waitForMessages(1);
      expect(m?.recipients).toEqual(['bob@example.com', 'carol@example.com']);
      expect(m?.text.endsWith(message)).toBe(true);
      // No client address on a Unix socket: the trace header leaves the TCP-info out.
      expect(m?.text).toMatch(
        /^Received: from mx\.test\.example\r\n\tby mx\.test\.example \(mailframe\) with LMTP id /,
      );
      // The socket file goes away with the server.
      await t.close();
      await expect(stat(path)).rejects.toThrow();
    },
  );

  it('holds Unix socket clients only to the total connection limit, not the per-address one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mailframe-lmtp-'));
    scope.defer(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'lmtp.sock');
    await scope.start({
      plugins: [LOCAL],
      config: { listeners: [{ name: 'lmtp', path, protocol: 'lmtp' }], limits: { maxConnectionsPerIp: 2 } },
    });
    const greetings: string[] = [];
    for (let i = 0; i < 3; i++) {
      const socket = connect({ path });
      scope.defer(() => socket.destroy());
      greetings.push(
        await new Promise<string>((resolve, reject) => {
          socket.once('data', (d) => resolve(d.toString('latin1').slice(0, 3)));
          socket.once('error', reject);
        }),
      );
    }
    expect(greetings).toEqual(['220', '220', '220']);
  });

  it('refuses a listener with both port and path, or LMTP on port 25', async () => {
    const bad = (listener: Record<string, unknown>) =>
      validateCoreConfig(createAjv(), { listeners: [listener] }).errors.join('\n');
    expect(bad({ name: 'x', port: 2524, protocol: 'lmtp' })).toBe('');
    expect(bad({ name: 'x', port: 2524, path: '/tmp/x.sock' })).toMatch(
      /must match exactly one schema in oneOf/,
    );
    expect(bad({ name: 'x' })).toMatch(/must match exactly one schema in oneOf/);
    expect(bad({ name: 'x', port: 25, protocol: 'lmtp' })).toMatch(/LMTP must not use port 25/);
  });
});
