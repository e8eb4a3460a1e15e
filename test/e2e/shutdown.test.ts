/**
 * Graceful shutdown: stop accepting, 421 4.3.2 to idle sessions, let a
 * transaction in progress finish, then 421 4.3.2.
 */
import { describe, expect, it } from 'vitest';
import { connectClient } from '../../core/testkit.ts';
import { afterReceived } from '../helpers/message.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

/** A server with rcpt-local and a session that has a transaction open (EHLO and MAIL FROM accepted). */
async function afterMail() {
  const t = await scope.start({ plugins: [LOCAL] });
  const c = await scope.connect(t);
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  return { t, c };
}

/** As `afterMail`, with a recipient accepted and DATA answered 354: message content comes next. */
async function inData() {
  const { t, c } = await afterMail();
  await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
  await c.expect('DATA', 354);
  return { t, c };
}

describe('graceful shutdown', () => {
  it('sends 421 4.3.2 to an idle session and closes it', async () => {
    const t = await scope.start();
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    const closing = t.server.close(5000);
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([421, '4.3.2']);
    await c.waitClosed();
    await closing;
    expect(t.server.connections).toBe(0);
  });

  it('lets a message in DATA finish (250), then sends 421 4.3.2; new connections are refused', async () => {
    const { t, c } = await inData();
    c.send('Subject: in flight\r\n\r\nfirst half\r\n');
    const closing = t.server.close(5000);
    let closed = false;
    void closing.then(() => {
      closed = true;
    });
    // The listener no longer accepts.
    await expect(connectClient(t.port, t.host)).rejects.toThrow(/ECONNREFUSED/);
    // The session is still open and has said nothing.
    expect(c.ended).toBe(false);
    expect(c.pending).toBe('');
    expect(closed).toBe(false);
    c.send('second half\r\n.\r\n');
    const done = await c.read();
    expect([done.code, done.enhanced]).toEqual([250, '2.0.0']);
    const bye = await c.read();
    expect([bye.code, bye.enhanced]).toEqual([421, '4.3.2']);
    await c.waitClosed();
    await closing;
    const [m] = await t.waitForMessages(1);
    expect(afterReceived(m!).toString()).toBe('Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n');
  });

  it('lets an open transaction go on, then sends 421 4.3.2 once the session is idle', async () => {
    const { t, c } = await afterMail();
    const closing = t.server.close(5000);
    // An open transaction (MAIL given) may still be completed or reset.
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('RSET', 250, '2.0.0');
    // Idle again: the server says goodbye.
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([421, '4.3.2']);
    await c.waitClosed();
    await closing;
  });

  it('answers a MAIL pipelined behind the end of a transaction with 421 4.3.2', async () => {
    const { t, c } = await afterMail();
    const closing = t.server.close(5000);
    c.send('RSET\r\nMAIL FROM:<a@b.example>\r\nNOOP\r\n');
    const [rset, mail] = await c.readMany(2);
    expect([rset?.code, rset?.enhanced]).toEqual([250, '2.0.0']);
    expect([mail?.code, mail?.enhanced]).toEqual([421, '4.3.2']);
    await c.waitClosed();
    expect(c.pending).toBe('');
    await closing;
  });

  it('sends 421 4.3.2 to a transaction still open when the grace period ends', async () => {
    const { t, c } = await inData();
    c.send('Subject: never finished\r\n\r\n');
    const closing = t.server.close(300);
    const r = await c.read(5000);
    expect([r.code, r.enhanced]).toEqual([421, '4.3.2']);
    await c.waitClosed();
    await closing;
    expect(t.queued).toHaveLength(0);
  });
});
