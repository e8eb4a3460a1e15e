/**
 * deliver-maildir on a big mailbox: deliveries per second to one Maildir that
 * already holds N messages, for deliveries that may repeat an earlier one
 * (retries, messages queued before a restart), which must make sure that the
 * message is not in the Maildir already.
 *
 *   npx tsx bench/maildir-repeat.ts [--existing 50000] [--deliveries 500] [--time-limit 60] [--no-fsync] [--first]
 *
 * --first: first attempts instead (never a repeat: nothing is looked up), for
 * the cost of the normal path.
 *
 * Bounded: at most --deliveries deliveries, stopping early after --time-limit
 * seconds (the rate is then over what was done). The mailbox is filled by
 * hand-written files named as deliver-maildir names them (its own earlier
 * deliveries, half in new/, half moved to cur/ by a reader).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { isReply } from '../core/hooks.ts';
import { silentLogger } from '../core/log.ts';
import { MailServer } from '../core/server.ts';
import type { DeliveryJob, EnvelopeAttributes } from '../core/types.ts';

const { values } = parseArgs({
  options: {
    existing: { type: 'string', default: '50000' },
    deliveries: { type: 'string', default: '500' },
    'time-limit': { type: 'string', default: '60' },
    'no-fsync': { type: 'boolean', default: false },
    first: { type: 'boolean', default: false },
  },
});
const existing = Number(values.existing);
const deliveries = Number(values.deliveries);
const timeLimitMs = Number(values['time-limit']) * 1000;
const HOST = 'bench.example';

const dir = await mkdtemp(join(tmpdir(), 'mf-maildir-bench-'));
const maildir = join(dir, 'data', 'mail', 'example.com', 'alice', 'Maildir');
try {
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(join(maildir, sub), { recursive: true });
  const t0 = Date.now();
  for (let i = 0; i < existing; i++) {
    const tag = i.toString(16).padStart(32, '0');
    const name = `1700000000.M${i}P1X${tag}.${HOST},S=100`;
    const path = i % 2 === 0 ? join(maildir, 'new', name) : join(maildir, 'cur', `${name}:2,S`);
    await writeFile(path, 'Subject: old\n\nold\n');
  }
  process.stdout.write(`filled ${existing} messages in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);

  const server = await MailServer.create({
    config: {
      hostname: HOST,
      dataDir: join(dir, 'data'),
      listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
      plugins: [
        {
          plugin: 'deliver-maildir',
          config: { root: 'mail', domains: ['example.com'], fsync: !values['no-fsync'] },
        },
      ],
    },
    logger: silentLogger(),
  });
  const message = Buffer.from(`Subject: bench\r\n\r\n${'x'.repeat(2000)}\r\n`);
  const job = (n: number): DeliveryJob => ({
    id: `bench-${n}`,
    destination: 'example.com',
    route: undefined,
    from: 'sender@origin.example',
    recipients: [{ address: 'alice@example.com', attributes: {} }],
    attributes: {} as EnvelopeAttributes,
    // A retry (the delivery may repeat an earlier attempt), or with --first a first attempt.
    attempts: values.first ? 0 : 1,
    receivedAt: Date.now(),
    stream: () => Readable.from([message]),
    log: silentLogger(),
  });
  const start = process.hrtime.bigint();
  let done = 0;
  while (done < deliveries && Number(process.hrtime.bigint() - start) / 1e6 < timeLimitMs) {
    const report = await server.outbound.deliver(job(done));
    if (report === undefined || isReply(report) || report.results[0]?.status !== 'delivered')
      throw new Error(`delivery ${done} failed: ${JSON.stringify(report)}`);
    done++;
  }
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  process.stdout.write(
    `${done} ${values.first ? 'first' : 'repeatable'} deliveries to a Maildir of ${existing} messages (fsync ${!values['no-fsync']}): ` +
      `${(done / (ms / 1000)).toFixed(1)} deliveries/s${done < deliveries ? ' (time limit reached)' : ''}\n`,
  );
  await server.close(0);
} finally {
  await rm(dir, { recursive: true, force: true });
}
