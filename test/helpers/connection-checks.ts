/**
 * For tests of the connection checks (dnsbl, dnswl, fcrdns, helo-checks):
 * clients from other loopback addresses, the results a check recorded at MAIL
 * FROM, and a log captured as JSON lines.
 */
import { connect as netConnect } from 'node:net';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { SmtpClient, type TestServer } from '../../core/testkit.ts';
import { type CheckName, type PolicyChecks, resultsOf } from '../../plugins/policy/policy.ts';

/** A client connected from `localAddress` (any of 127.0.0.0/8 on Linux; `::1` for IPv6), greeting read. */
export async function connectFrom(t: TestServer, localAddress: string): Promise<SmtpClient> {
  const socket = netConnect({ port: t.port, host: t.host, localAddress });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const client = new SmtpClient(socket);
  client.greeting = await client.read();
  return client;
}

/** One whole message from `localAddress` to bob@example.com; every reply must be a success. */
export async function sendMessageFrom(t: TestServer, localAddress: string): Promise<void> {
  const c = await connectFrom(t, localAddress);
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<alice@sender.example>', 250);
  await c.expect('RCPT TO:<bob@example.com>', 250);
  await c.expect('DATA', 354);
  const sent = await c.sendData('Subject: hi\r\n\r\nhello\r\n');
  await c.close();
  if (sent.code !== 250) throw new Error(`message refused: ${sent.code} ${sent.lines.join(' ')}`);
}

/** Hands `check`'s results to `see` at MAIL FROM, after the checks (`Stage.LATE`). */
export function mailProbe<K extends CheckName>(check: K, see: (results: readonly PolicyChecks[K][]) => void) {
  return definePlugin({
    name: `test-mail-probe-${check}`,
    schema: Type.Object({}),
    register(api) {
      api.hooks.mail.tap(
        (tx) => {
          see(resultsOf(tx, check));
          return undefined;
        },
        { stage: Stage.LATE },
      );
    },
  });
}

export { captureLog, type LogLine } from './capture-log.ts';

/** A clock the test moves by hand. */
export function manualClock(start = Date.parse('2026-01-01T00:00:00Z')) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}
