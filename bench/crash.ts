/**
 * Large crash run for the file-system queue: many messages over several
 * connections, the server SIGKILLed again and again (during DATA, after the
 * final dot, right after a 250, at random), restarted each time, and the
 * queue files checked against what was acknowledged.
 *
 *   npx tsx bench/crash.ts [--messages 2000] [--senders 8] [--kills 8] [--no-fsync] [--no-maildir]
 *
 * Messages are delivered to Maildir (one mailbox per recipient) while the
 * kills happen, and the copies counted; --no-maildir leaves them queued.
 * Exit code 1 when an acknowledged message is lost, duplicated (queued or
 * delivered twice) or damaged.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { silentLogger } from '../core/log.ts';
import { FsQueueStore } from '../plugins/queue-fs/store.ts';
import { type KillMode, runCrashScenario } from '../test/crash/crash-harness.ts';

const MODES: readonly KillMode[] = ['during-data', 'after-dot', 'after-ack', 'random'];

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '2000' },
    senders: { type: 'string', default: '8' },
    kills: { type: 'string', default: '8' },
    'big-every': { type: 'string', default: '25' },
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    'no-fsync': { type: 'boolean', default: false },
    'no-maildir': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
    'group-commit-only': { type: 'boolean', default: false },
  },
});

/**
 * Group commit in figures: N durable enqueues (file fsync, rename, directory
 * fsync) at a given concurrency, in process, and how many directory fsyncs
 * covered their renames.
 */
async function groupCommit(n: number, concurrency: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mf-gc-'));
  const store = await FsQueueStore.open({
    root: dir,
    fsync: true,
    clock: { now: () => Date.now() },
    log: silentLogger(),
  });
  const body = Buffer.from(`Subject: group commit\r\n\r\n${'x'.repeat(2000)}\r\n`);
  const t = process.hrtime.bigint();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < n) {
        await store.enqueue(
          {
            from: 'a@example.net',
            recipients: [{ address: 'b@example.com', domain: 'example.com', attributes: {} }],
            attributes: {},
            receivedAt: Date.now(),
          },
          body,
        );
      }
    }),
  );
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  const { fsyncs, requests } = store.messageSync.counters;
  await store.close();
  await rm(dir, { recursive: true, force: true });
  return `${String(concurrency).padStart(3)} at once: ${(n / (ms / 1000)).toFixed(0).padStart(5)} enqueues/s, ${fsyncs} directory fsyncs for ${requests} renames`;
}

if (values.help) {
  process.stdout.write(
    'npx tsx bench/crash.ts [--messages 2000] [--senders 8] [--kills 8] [--big-every 25] [--seed N] [--no-fsync] [--no-maildir] [--group-commit-only]\n',
  );
  process.exit(0);
}
process.stdout.write('group commit (durable enqueues, 2 KB messages)\n');
for (const [n, c] of [
  [200, 1],
  [1000, 16],
  [1000, 64],
] as const) {
  process.stdout.write(`  ${await groupCommit(n, c)}\n`);
}
if (values['group-commit-only']) process.exit(0);
process.stdout.write('\ncrash run\n');

const kills = Array.from({ length: Number(values.kills) }, (_, i) => MODES[i % MODES.length] as KillMode);
const started = Date.now();
const report = await runCrashScenario({
  messages: Number(values.messages),
  senders: Number(values.senders),
  kills,
  bigEvery: Number(values['big-every']),
  seed: Number(values.seed),
  fsync: !values['no-fsync'],
  maildir: !values['no-maildir'],
  log: (line) => process.stdout.write(`  ${line}\n`),
});
const seconds = (Date.now() - started) / 1000;
const avg = (xs: readonly number[]) => Math.round(xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length));
const rows: Array<[string, string | number]> = [
  ['seed', values.seed],
  ['fsync', String(!values['no-fsync'])],
  ['messages attempted', report.attempted],
  ['acknowledged (250)', report.acked],
  ['reply lost in the kill (dot sent, no reply)', report.inFlight],
  ['  of which queued anyway', report.inFlightPresent],
  ['cut short before the final dot', report.aborted],
  ['refused', report.rejected],
  ['SIGKILLs', report.kills],
  ['acknowledged but lost', report.lost],
  ['queued more than once', report.duplicates],
  ['damaged (bytes differ)', report.damaged],
  ['queued without a 250', report.unexpected],
  ['quarantined as corrupt at restart', report.corruptFiles],
  ['tmp/ leftovers after restart', report.tmpLeftovers],
  ['Maildir delivery during the kills', String(!values['no-maildir'])],
  ['recipients delivered to Maildir', report.delivered],
  ['delivered twice to the same mailbox', report.maildirDuplicates],
  ['acknowledged, neither queued nor delivered', report.undelivered],
  ['Maildir tmp/ leftovers after restart', report.maildirTmpLeftovers],
  ['CLI list agrees with the files', String(report.cliAgrees)],
  ['server start (avg ms)', avg(report.startTimes)],
  ['wall time (s)', seconds.toFixed(1)],
  [
    'acknowledged per second of serving',
    (report.acked / (seconds - report.startTimes.reduce((a, b) => a + b, 0) / 1000)).toFixed(1),
  ],
];
const width = Math.max(...rows.map(([k]) => k.length));
process.stdout.write(
  `\nqueue-fs crash run\n${rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n')}\n`,
);
if (report.problems.length > 0) {
  process.stdout.write(`\nPROBLEMS:\n${report.problems.map((p) => `  ${p}`).join('\n')}\n`);
  process.exitCode = 1;
}
