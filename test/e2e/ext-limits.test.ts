/**
 * LIMITS (RFC 9422): RCPTMAX mirrors `limits.maxRecipients` (the core answers
 * 452 4.5.3 past it); MAILMAX, when configured, caps MAIL commands per
 * connection with 421 4.7.0 and a close, so the client reconnects.
 */
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestPlugin, TestServer } from '../../core/testkit.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

async function session(
  plugins: readonly TestPlugin[],
  maxRecipients = 3,
): Promise<{ server: TestServer; client: SmtpClient; ehlo: readonly string[] }> {
  const server = await scope.start({ plugins, config: { limits: { maxRecipients } } });
  const client = await scope.connect(server);
  const ehlo = await client.expect('EHLO client.example', 250);
  return { server, client, ehlo: ehlo.lines };
}

describe('LIMITS', () => {
  it('advertises RCPTMAX from limits.maxRecipients and no MAILMAX by default', async () => {
    const { ehlo } = await session(['limits', LOCAL], 7);
    expect(ehlo).toContain('LIMITS RCPTMAX=7');
  });

  it('RCPTMAX is what the core enforces: the next recipient gets 452 4.5.3', async () => {
    const { server, client, ehlo } = await session(['limits', LOCAL]);
    expect(ehlo).toContain('LIMITS RCPTMAX=3');
    await client.expect('MAIL FROM:<a@b.example>', 250);
    for (const who of ['a', 'b', 'c']) await client.expect(`RCPT TO:<${who}@example.com>`, 250);
    await client.expect('RCPT TO:<d@example.com>', 452, '4.5.3');
    await client.expect('DATA', 354);
    expect((await client.sendData('Subject: three\r\n\r\nx\r\n')).code).toBe(250);
    const [m] = await server.waitForMessages(1);
    expect(m?.recipients).toHaveLength(3);
  });

  it('advertises MAILMAX and closes with 421 4.7.0 on the MAIL past it', async () => {
    const { server, client, ehlo } = await session([['limits', { mailMax: 2 }], LOCAL]);
    expect(ehlo).toContain('LIMITS RCPTMAX=3 MAILMAX=2');
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RCPT TO:<bob@example.com>', 250);
    await client.expect('DATA', 354);
    expect((await client.sendData('Subject: one\r\n\r\nx\r\n')).code).toBe(250);
    // A transaction ended by RSET counts too, and EHLO does not start the count again.
    await client.expect('MAIL FROM:<a@b.example>', 250);
    await client.expect('RSET', 250);
    await client.expect('EHLO client.example', 250);
    await client.expect('MAIL FROM:<a@b.example>', 421, '4.7.0');
    await client.waitClosed();
    expect(server.queued).toHaveLength(1);
    // A new connection starts from zero.
    const c = await scope.connect(server);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
  });

  it('without the plugin, nothing is advertised', async () => {
    const { ehlo } = await session([LOCAL]);
    expect(ehlo.some((k) => k.startsWith('LIMITS'))).toBe(false);
  });
});
