/**
 * Faults a plugin raises outside its hook calls (docs/architecture.md,
 * "Faults"): each is logged naming the plugin and hook, counted in the hook
 * metrics, and the server keeps serving, a second session in flight included.
 * The process-level side (the process does not exit; an unattributable
 * exception does, after the sessions finish) is in fault-process.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { SmtpClient, TestServer } from '../../core/testkit.ts';
import faulty, { FAULT_KINDS } from '../fixtures/faulty-plugin.ts';
import { captureLog as captureLogLines } from '../helpers/capture-log.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

interface LogLine {
  level: number;
  msg: string;
  plugin?: string;
  hook?: string;
  fault?: string;
  err?: { message?: string };
}

const captureLog = () => captureLogLines<LogLine>();

/** Wait (bounded) until `check` holds. */
async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await new Promise((ok) => setTimeout(ok, 10));
  }
  throw new Error(`still waiting for ${what}`);
}

function faultsOf(t: TestServer, plugin: string, hook: string): number | undefined {
  return t.server.hookMetrics().find((m) => m.plugin === plugin && m.hook === hook)?.faults;
}

async function finishMessage(c: SmtpClient, subject: string): Promise<void> {
  await c.expect('DATA', 354);
  const r = await c.sendData(`Subject: ${subject}\r\n\r\nbody\r\n`);
  expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
}

describe('plugin faults outside hook calls', () => {
  it.each(FAULT_KINDS)('fault kind %s: logged, counted, and the server keeps serving', async (kind) => {
    const { lines, logger } = captureLog();
    const t = await scope.start({ plugins: [faulty, LOCAL], logger, catchFaults: true });
    // A second session with a transaction in flight while the fault happens.
    const other = await scope.connect(t);
    await other.expect('EHLO other.example', 250);
    await other.expect('MAIL FROM:<a@b.example>', 250);
    await other.expect('RCPT TO:<bob@example.com>', 250);

    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect(`RCPT TO:<${kind}@example.com>`, 250, '2.1.5');
    await until(() => faultsOf(t, 'faulty', 'rcpt') === 1, 'the fault to be counted');

    const line = lines.find((l) => l.msg.startsWith('plugin fault'));
    expect(line).toMatchObject({
      level: 50,
      plugin: 'faulty',
      hook: 'rcpt',
      fault: kind === 'rejection' ? 'unhandledRejection' : 'uncaughtException',
      err: { message: `planted ${kind} fault` },
    });
    expect(t.server.hookMetrics().find((m) => m.plugin === 'faulty')).toEqual({
      plugin: 'faulty',
      hook: 'rcpt',
      calls: 2,
      failures: 0,
      timeouts: 0,
      faults: 1,
    });
    // Both sessions complete their transactions, and new ones are served.
    await finishMessage(other, 'in flight');
    await finishMessage(c, 'after the fault');
    await t.waitForMessages(2);
    const fresh = await scope.connect(t);
    await fresh.expect('EHLO fresh.example', 250);
    expect(lines.some((l) => l.level >= 60)).toBe(false);
  });

  it('attributes a fault left behind by register to the plugin and "register"', async () => {
    const { lines, logger } = captureLog();
    const t = await scope.start({
      plugins: [[faulty, { registerFault: true }], LOCAL],
      logger,
      catchFaults: true,
    });
    await until(() => faultsOf(t, 'faulty', 'register') === 1, 'the fault to be counted');
    expect(lines.find((l) => l.msg.startsWith('plugin fault'))).toMatchObject({
      plugin: 'faulty',
      hook: 'register',
      err: { message: 'planted register fault' },
    });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await finishMessage(c, 'served');
  });

  it('routes each fault to its own server and removes the process listeners with the last one', async () => {
    const baseline = {
      exception: process.listenerCount('uncaughtException'),
      rejection: process.listenerCount('unhandledRejection'),
    };
    const a = await scope.start({ plugins: [faulty, LOCAL], catchFaults: true });
    const b = await scope.start({ plugins: [faulty, LOCAL], catchFaults: true });
    expect(process.listenerCount('uncaughtException')).toBe(baseline.exception + 1);
    expect(process.listenerCount('unhandledRejection')).toBe(baseline.rejection + 1);
    const c = await scope.connect(b);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RCPT TO:<timer@example.com>', 250);
    await until(() => faultsOf(b, 'faulty', 'rcpt') === 1, 'the fault to be counted');
    expect(faultsOf(a, 'faulty', 'rcpt')).toBe(0); // a never ran its rcpt tap
    await c.close();
    await b.close();
    expect(process.listenerCount('uncaughtException')).toBe(baseline.exception + 1);
    await a.close();
    expect(process.listenerCount('uncaughtException')).toBe(baseline.exception);
    expect(process.listenerCount('unhandledRejection')).toBe(baseline.rejection);
  });

  it('installs no process listener and enters no scope unless asked (embedding)', async () => {
    const before = process.listenerCount('uncaughtException') + process.listenerCount('unhandledRejection');
    const t = await scope.start({ plugins: [faulty, LOCAL] });
    expect(process.listenerCount('uncaughtException') + process.listenerCount('unhandledRejection')).toBe(
      before,
    );
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await finishMessage(c, 'no catching');
    expect(t.server.hookMetrics().find((m) => m.plugin === 'faulty')?.faults).toBe(0);
  });
});
