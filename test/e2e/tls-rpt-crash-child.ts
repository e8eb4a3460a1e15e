/**
 * Child process for the tls-rpt crash test: a server with tls-rpt on the
 * given data directory records `flushed` sessions, flushes them (as the timer
 * would), records `unflushed` more, prints `ready` and waits to be killed
 * (a minute at most).
 *
 *   node test/e2e/tls-rpt-crash-child.ts <dataDir> <at> <flushed> <unflushed>
 */
import { MailServer } from '../../core/server.ts';

const [dataDir, at, flushed, unflushed] = process.argv.slice(2);
if (!dataDir || !at || !flushed || !unflushed) throw new Error('usage: <dataDir> <at> <flushed> <unflushed>');
const server = await MailServer.create({
  config: {
    hostname: 'mx.test.example',
    dataDir,
    listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
    plugins: [{ plugin: 'tls-rpt', config: { flushInterval: '1h' } }],
  },
});
const rpt = server.registry.service('tlsRpt');
if (!rpt) throw new Error('no tlsRpt service');
const event = {
  policyDomain: 'example.net',
  policyType: 'no-policy-found',
  policyStrings: [],
  mxHosts: [],
  result: 'success',
  at: Number(at),
} as const;
for (let i = 0; i < Number(flushed); i++) rpt.record(event);
rpt.flush();
for (let i = 0; i < Number(unflushed); i++) rpt.record(event);
process.stdout.write('ready\n');
// Bounded: should the test die before it kills us, we do not linger.
setTimeout(() => process.exit(1), 60_000);
