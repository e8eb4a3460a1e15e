/**
 * Slow clients cannot hold a connection forever: a command line must arrive
 * whole within `timeouts.command`, and message data (DATA, BDAT) must keep up
 * `timeouts.minDataRate` (Postfix's smtpd_timeout + smtpd_min_data_rate). A
 * trickle of octets extends neither; a client that is merely quick is never
 * affected.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestServerOptions } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;
/** Short timeouts so the server acts quickly; the trickles below would outlast them many times over. */
const SHORT = { timeouts: { command: 400, data: 400 } } satisfies TestServerOptions['config'];
/** For clients that must not time out: short enough that the test outlasts it, long enough for a loaded machine. */
const PATIENT = { timeouts: { command: 1000, data: 1000 } } satisfies TestServerOptions['config'];

/**
 * Send `text` one octet every `everyMs` ms, until it is all sent or the
 * server closed the connection. Stopped at the end of the test in any case.
 */
function trickle(c: SmtpClient, text: string, everyMs = 100): Promise<number> {
  let stopped = false;
  scope.defer(() => {
    stopped = true;
  });
  return (async () => {
    let sent = 0;
    for (const octet of Buffer.from(text, 'latin1')) {
      if (stopped || c.ended) break;
      c.send(Buffer.of(octet));
      sent++;
      await sleep(everyMs);
    }
    return sent;
  })();
}

async function transaction(c: SmtpClient): Promise<void> {
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
}

describe('slow-client deadlines', () => {
  it('closes a client that trickles a command line one octet at a time with 421 4.4.2', async () => {
    const t = await scope.start({ config: SHORT });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    // 40 octets at one per 100 ms: each octet comes well within the 400 ms timeout, the line never does.
    const line = `NOOP ${'x'.repeat(33)}\r\n`;
    const sending = trickle(c, line);
    const r = await c.read(8000);
    expect([r.code, r.enhanced]).toEqual([421, '4.4.2']);
    await c.waitClosed();
    expect(await sending).toBeLessThan(line.length);
  });

  it('closes a client that trickles message data after DATA with 421 4.4.2 and queues nothing', async () => {
    const t = await scope.start({ plugins: [LOCAL], config: SHORT });
    const c = await scope.connect(t);
    await transaction(c);
    await c.expect('DATA', 354);
    const body = `Subject: slow\r\n\r\n${'x'.repeat(60)}\r\n.\r\n`;
    const sending = trickle(c, body);
    const r = await c.read(12000);
    expect([r.code, r.enhanced]).toEqual([421, '4.4.2']);
    await c.waitClosed();
    expect(await sending).toBeLessThan(body.length);
    expect(t.queued).toHaveLength(0);
  });

  it('closes a client that trickles a BDAT chunk with 421 4.4.2 and queues nothing', async () => {
    const t = await scope.start({ plugins: ['chunking', LOCAL], config: SHORT });
    const c = await scope.connect(t);
    await transaction(c);
    const chunk = `Subject: slow\r\n\r\n${'x'.repeat(60)}\r\n`;
    c.send(`BDAT ${chunk.length} LAST\r\n`);
    const sending = trickle(c, chunk);
    const r = await c.read(12000);
    expect([r.code, r.enhanced]).toEqual([421, '4.4.2']);
    await c.waitClosed();
    expect(await sending).toBeLessThan(chunk.length);
    expect(t.queued).toHaveLength(0);
  });

  it('lets timeouts.minDataRate: 0 restart the data timeout on every octet (the old behaviour, by choice)', async () => {
    const t = await scope.start({
      plugins: [LOCAL],
      config: { timeouts: { ...PATIENT.timeouts, minDataRate: 0 } },
    });
    const c = await scope.connect(t);
    await transaction(c);
    await c.expect('DATA', 354);
    // 26 octets at one per 100 ms: well past the 1 s data timeout in all.
    const body = 'Subject: slow\r\n\r\nok\r\n.\r\n';
    expect(await trickle(c, body)).toBe(body.length);
    const r = await c.read(3000);
    expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
  });

  it('leaves a pipelining client alone: several transactions and a 2 MB message in one group each', async () => {
    const t = await scope.start({ plugins: [LOCAL], config: PATIENT });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    const big = `Subject: big\r\n\r\n${`${'y'.repeat(998)}\r\n`.repeat(2000)}`;
    for (const body of ['Subject: one\r\n\r\nfirst\r\n', big, 'Subject: three\r\n\r\nthird\r\n']) {
      c.send(`MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n${body}.\r\n`);
      const replies = await c.readMany(4, 10000);
      expect(replies.map((r) => r.code)).toEqual([250, 250, 354, 250]);
    }
    expect(t.queued).toHaveLength(3);
  });

  it('leaves alone a client whose lines come one by one, each well within the command timeout', async () => {
    const t = await scope.start({ plugins: [LOCAL], config: PATIENT });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    // Twelve commands 150 ms apart: past one command timeout in all, never for one line.
    for (let i = 0; i < 12; i++) {
      await sleep(150);
      await c.expect('NOOP', 250, '2.0.0');
    }
  });
});
