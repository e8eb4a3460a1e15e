/**
 * `npm run bench:outbound`: the outbound (MX delivery) benchmark. Messages
 * queued for 20 destination domains, whose MX records (a DNS server on
 * loopback) point at one Postfix `smtp-sink` per domain on 127.0.0.11 upwards,
 * are delivered by mailframe (queue-fs + deliver-mx) and, in the same run, by
 * Postfix (qmgr + smtp, a transport table to the same sinks) when installed.
 *
 * For each MTA: queue everything held (warm-up batch first, unmeasured), then
 * release it all and measure until the sinks counted every message: delivered
 * messages per second, connections opened per message (sessions the sinks
 * saw end, after the MTA stopped) and CPU per message (the MTA's processes,
 * from /proc, release to an empty queue).
 *
 *   npm run bench:outbound -- [--messages 20000] [--domains 20] [--only mailframe|postfix]
 *                             [--port N] [--time-limit 120] [--timeout 900] [--no-warmup]
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startTestDnsServer, type TestDnsName } from '../core/testkit.ts';
import { controlRequest } from '../plugins/queue/control.ts';
import type { QueueStats } from '../plugins/queue/types.ts';
import { type LoadResult, runLoad } from './loadgen.ts';
import { type PostfixInstance, postfixUnavailable, startPostfix } from './postfix.ts';
import { cpuMs } from './proc.ts';
import { num, ratio, table } from './report.ts';
import { findProgram, freePort, launch, nodeBinary, ROOT, SMTP_SINK_MISSING } from './servers.ts';
import { openConnections, type SinkCounts, type SinkFarm, sinkAddress, startSinks } from './sinks.ts';
import { warmupFor } from './workloads.ts';

const USAGE = `Usage: npm run bench:outbound -- [options]

  --messages N      Messages delivered in the measured batch (default 20000).
  --domains N       Destination domains d01.bench.test ..., one smtp-sink each (default 20, at most 200).
  --size N          Octets per message, headers included (default 2048).
  --only NAME       mailframe or postfix (default: both; Postfix when installed).
  --port N          The sinks' port, the "remote port" standing in for 25 (default: a free one).
  --time-limit S    Give up waiting for one batch's delivery after S seconds (default 120).
  --timeout S       Hard limit for the whole run: everything is stopped after S seconds (default 900).
  --no-warmup       Skip the unmeasured warm-up batch (half the messages, at most 10,000).
  --deliver-mx JSON More deliver-mx settings for mailframe's side, e.g. '{"concurrency":400}'.
  --help
`;

export const MTAS = ['mailframe', 'postfix'] as const;
export type MtaName = (typeof MTAS)[number];

/** What the bench needs from an MTA under test. */
interface Mta {
  readonly name: MtaName;
  readonly host: string;
  readonly port: number;
  /** Messages queued and waiting for the release. */
  held(): Promise<number>;
  /** Messages still in the queue (0: drained). */
  pending(): Promise<number>;
  /** Work before the measured window (Postfix: move held mail where the queue manager finds it). */
  prepare(): Promise<void>;
  /** Start delivering everything held: the measured window starts right before. */
  release(): Promise<void>;
  /** Hold again what arrives next (after the warm-up). */
  hold(): Promise<void>;
  /** CPU ms of the MTA's processes so far. */
  cpuMs(): number;
  /** The part of `cpuMs` spent writing its log in a process of its own (Postfix's postlogd). */
  logCpuMs(): number;
  /** Stop: every connection to the sinks closes. */
  stop(): Promise<void>;
  /** Recent log or output, for error reports. */
  output(): string;
}

export interface BatchResult {
  readonly messages: number;
  /** Injection errors (not 2xx after data) and messages the sinks never saw. */
  readonly errors: number;
  readonly errorDetail: Readonly<Record<string, number>>;
  /** Release to the sinks' count reaching `messages`. */
  readonly deliverMs: number;
  /** Release to an empty queue. */
  readonly drainMs: number;
  readonly delivered: number;
  readonly msgsPerSec: number;
  /** Connections opened after the release: sessions the sinks saw end from then until the MTA stopped, less those already open at the release. */
  readonly connections: number;
  readonly connectionsPerMsg: number;
  /** CPU ms of the MTA, release to an empty queue, per delivered message. */
  readonly cpuMsPerMsg: number;
  /** The part of `cpuMsPerMsg` spent by a logging process (Postfix's postlogd; 0 for mailframe at level warn). */
  readonly logCpuMsPerMsg: number;
  readonly timedOut: boolean;
}

export interface SideResult {
  readonly mta: MtaName;
  readonly result?: BatchResult;
  readonly skipped?: string;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(
  what: string,
  done: () => boolean | Promise<boolean>,
  untilMs: number,
): Promise<void> {
  while (!(await done())) {
    if (performance.now() > untilMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** `count` messages spread over the domains, one connection per domain, all at once. */
async function inject(mta: Mta, domains: readonly string[], count: number, size: number, limitMs: number) {
  const per = domains.map(
    (_, i) => Math.floor(count / domains.length) + (i < count % domains.length ? 1 : 0),
  );
  const results: LoadResult[] = await Promise.all(
    domains.map((domain, i) =>
      runLoad({
        host: mta.host,
        port: mta.port,
        connections: 1,
        messages: per[i] ?? 0,
        size,
        domain,
        timeLimitMs: limitMs,
      }),
    ),
  );
  const errorDetail: Record<string, number> = {};
  for (const r of results) {
    for (const [k, v] of Object.entries(r.errorDetail))
      errorDetail[`queueing ${k}`] = (errorDetail[`queueing ${k}`] ?? 0) + v;
  }
  return {
    accepted: results.reduce((s, r) => s + r.messages, 0),
    errors: results.reduce((s, r) => s + r.errors, 0),
    errorDetail,
  };
}

interface BatchOptions {
  readonly domains: readonly string[];
  readonly size: number;
  readonly timeLimitMs: number;
}

/** Queue `count` messages held, release them, wait for the sinks and the queue. */
async function deliverBatch(mta: Mta, sinks: SinkFarm, count: number, o: BatchOptions) {
  const queued = await inject(mta, o.domains, count, o.size, o.timeLimitMs);
  const until = performance.now() + o.timeLimitMs;
  await waitUntil(
    'the queue to hold every message',
    async () => (await mta.held()) >= queued.accepted,
    until,
  );
  await mta.prepare();
  const before = sinks.counts();
  // Connections already open now (none when the warm-up's have closed) were not opened by this batch.
  const openBefore = openConnections(sinks.port);
  const cpu0 = mta.cpuMs();
  const log0 = mta.logCpuMs();
  const t0 = performance.now();
  await mta.release();
  const deadline = t0 + o.timeLimitMs;
  let timedOut = false;
  while (sinks.counts().messages - before.messages < queued.accepted) {
    if (performance.now() > deadline) {
      timedOut = true;
      break;
    }
    await sleep(10);
  }
  const t1 = performance.now();
  while (!timedOut && (await mta.pending()) > 0) {
    if (performance.now() > deadline) timedOut = true;
    else await sleep(10);
  }
  const t2 = performance.now();
  const cpu1 = mta.cpuMs();
  const log1 = mta.logCpuMs();
  return {
    queued,
    before,
    openBefore,
    delivered: sinks.counts().messages - before.messages,
    t0,
    t1,
    t2,
    cpu0,
    cpu1,
    logCpu: log1 - log0,
    timedOut,
  };
}

/** The sinks' counters once they stop moving (every session the MTA closed has been counted). */
async function settledCounts(sinks: SinkFarm): Promise<SinkCounts> {
  let last = sinks.counts();
  for (let stable = 0; stable < 5; ) {
    await sleep(100);
    const now = sinks.counts();
    stable = now.sessions === last.sessions && now.messages === last.messages ? stable + 1 : 0;
    last = now;
  }
  return last;
}

async function measureMta(mta: Mta, sinks: SinkFarm, messages: number, warmup: number, o: BatchOptions) {
  if (warmup > 0) {
    const w = await deliverBatch(mta, sinks, warmup, o);
    log(
      `  ${mta.name}: warm-up of ${w.delivered} messages in ${((w.t1 - w.t0) / 1000).toFixed(1)} s` +
        (w.timedOut ? ' (TIMED OUT)' : ''),
    );
    await mta.hold();
    // The measured batch starts with no connection open, as the warm-up's idle ones time out.
    await waitUntil(
      "the warm-up's connections to close",
      () => openConnections(sinks.port) === 0,
      performance.now() + o.timeLimitMs,
    ).catch((err: unknown) => log(`  ${mta.name}: ${err instanceof Error ? err.message : String(err)}`));
  }
  const b = await deliverBatch(mta, sinks, messages, o);
  await mta.stop();
  const after = await settledCounts(sinks);
  const connections = after.sessions - b.before.sessions - b.openBefore;
  const missing = b.queued.accepted - b.delivered;
  const errorDetail: Record<string, number> = { ...b.queued.errorDetail };
  if (missing > 0) errorDetail['not delivered'] = missing;
  const result: BatchResult = {
    messages,
    errors: b.queued.errors + Math.max(0, missing),
    errorDetail,
    deliverMs: b.t1 - b.t0,
    drainMs: b.t2 - b.t0,
    delivered: b.delivered,
    msgsPerSec: b.delivered / ((b.t1 - b.t0) / 1000),
    connections,
    connectionsPerMsg: b.delivered ? connections / b.delivered : Number.NaN,
    cpuMsPerMsg: b.delivered ? (b.cpu1 - b.cpu0) / b.delivered : Number.NaN,
    logCpuMsPerMsg: b.delivered ? b.logCpu / b.delivered : Number.NaN,
    timedOut: b.timedOut,
  };
  return result;
}

// ---- the MTAs ----

export const DELIVER_MX_MISSING =
  'failed: the deliver-mx plugin is not in this tree (plugins/deliver-mx): merge the MX delivery work first';

function deliverMxUnavailable(): string | undefined {
  return existsSync(join(ROOT, 'plugins', 'deliver-mx')) ? undefined : DELIVER_MX_MISSING;
}

interface MailframeSetup {
  readonly domains: readonly string[];
  readonly sinkPort: number;
  readonly dnsServer: string;
  readonly timeoutMs: number;
  /** More deliver-mx settings (`--deliver-mx`). */
  readonly deliverMx: Readonly<Record<string, unknown>>;
}

async function startMailframe(s: MailframeSetup): Promise<Mta> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-bench-outbound-'));
  const releaseFile = join(dir, 'release');
  const port = await freePort();
  const dataDir = join(dir, 'data');
  const config = {
    hostname: 'mailframe.bench.local',
    dataDir,
    listeners: [{ name: 'smtp', host: '127.0.0.1', port, role: 'mx' }],
    limits: { maxConnections: 20_000, maxConnectionsPerIp: 20_000 },
    timeouts: { shutdownGrace: 2000 },
    dns: { servers: [s.dnsServer] },
    log: { level: 'warn', pretty: false },
    plugins: [
      { plugin: 'enhanced-status-codes' },
      { plugin: 'pipelining' },
      { plugin: 'rcpt-local', config: { domains: s.domains } },
      // Holds delivery until the bench releases it (the queue is filled first).
      {
        plugin: join(ROOT, 'bench', 'peers', 'deliver-gate.ts'),
        config: { releaseFile },
        timeout: s.timeoutMs,
      },
      { plugin: 'deliver-mx', config: { ...s.deliverMx, port: s.sinkPort } },
      {
        plugin: 'queue-fs',
        // Jobs at once as Postfix's smtp processes (100) and per destination as its concurrency limit (20).
        config: {
          fsync: true,
          controlSocket: true,
          concurrency: 100,
          perDestination: 20,
          routes: [{ domains: '*', via: 'deliver-mx' }],
        },
      },
    ],
  };
  const file = join(dir, 'mailframe.json');
  await writeFile(file, JSON.stringify(config, null, 2));
  const proc = await launch({
    name: 'mailframe',
    command: nodeBinary(),
    args: [join(ROOT, 'bin', 'mailframe.ts'), 'start', '-c', file],
    port,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  }).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  const socket = join(dataDir, 'queue', 'control.sock');
  const stats = async (): Promise<QueueStats> => {
    const r = await controlRequest(socket, { op: 'stats' });
    if (!r?.ok) throw new Error(`queue stats: ${r ? r.error : 'no control socket'}`);
    return r.result as QueueStats;
  };
  return {
    name: 'mailframe',
    host: proc.host,
    port,
    held: async () => (await stats()).messages,
    pending: async () => (await stats()).messages,
    prepare: async () => {},
    release: () => writeFile(releaseFile, ''),
    hold: () => rm(releaseFile, { force: true }),
    cpuMs: () => cpuMs(proc.pid),
    // Logs at warn, from its own process: no delivery is logged.
    logCpuMs: () => 0,
    stop: proc.stop,
    output: proc.output,
  };
}

function postfixMta(pf: PostfixInstance): Mta {
  return {
    name: 'postfix',
    host: pf.host,
    port: pf.port,
    held: async () => pf.held(),
    pending: async () => pf.pending() + pf.held(),
    prepare: () => pf.unhold(),
    release: () => pf.kick(),
    // Everything Postfix's smtpd accepts goes on hold anyway.
    hold: async () => {},
    cpuMs: () => pf.cpuMs(),
    logCpuMs: () => pf.logCpuMs(),
    stop: pf.stop,
    output: pf.logTail,
  };
}

// ---- DNS: the zone the MX side resolves ----

interface DnsZoneServer {
  /** `host:port` for the core config's `dns.servers`. */
  readonly server: string;
  close(): Promise<void>;
}

/**
 * The testkit's DNS server on loopback, authoritative for `d01.bench.test MX
 * 10 mx.d01.bench.test`, `mx.d01.bench.test A 127.0.0.11`, and so on (no
 * AAAA: those queries get an empty answer).
 */
async function startDns(domains: readonly string[]): Promise<DnsZoneServer> {
  const zone: Record<string, TestDnsName> = {};
  for (const [i, domain] of domains.entries()) {
    zone[domain] = { MX: [{ preference: 10, exchange: `mx.${domain}` }] };
    zone[`mx.${domain}`] = { A: [sinkAddress(i)] };
  }
  const dns = await startTestDnsServer(zone);
  return { server: dns.address, close: () => dns.close() };
}

// ---- the run ----

function domainNames(n: number): string[] {
  const width = Math.max(2, String(n).length);
  return Array.from({ length: n }, (_, i) => `d${String(i + 1).padStart(width, '0')}.bench.test`);
}

function resultTable(sides: readonly SideResult[]): string {
  const rows = sides.map((s) => {
    const r = s.result;
    if (!r) return [s.mta, '-', '-', '-', '-', '-', '-', s.skipped ?? ''];
    const notes: string[] = [];
    if (r.timedOut) notes.push('TIMED OUT');
    if (r.logCpuMsPerMsg > 0) notes.push(`CPU: ${num(r.logCpuMsPerMsg, 3)} ms/msg writing the mail log`);
    const detail = Object.entries(r.errorDetail).map(([k, v]) => `${k}: ${v}`);
    if (detail.length) notes.push(detail.join(', '));
    return [
      s.mta,
      num(r.delivered, 0),
      num(r.msgsPerSec, 0),
      num(r.drainMs / 1000, 2),
      num(r.connections, 0),
      num(r.connectionsPerMsg, 4),
      num(r.cpuMsPerMsg, 3),
      notes.join('; '),
    ];
  });
  return table(
    ['MTA', 'delivered', 'msgs/s', 'drain s', 'connections', 'conns/msg', 'CPU ms/msg', 'notes'],
    rows,
    'lrrrrrrl',
  );
}

interface Target {
  readonly target: string;
  readonly measured: string;
  readonly met: string;
}

/** The issue's targets: msgs/s >= 1.5x Postfix's, <= 0.02 connections per message, CPU/msg <= Postfix's. */
export function targets(sides: readonly SideResult[]): Target[] {
  const mf = sides.find((s) => s.mta === 'mailframe')?.result;
  const pf = sides.find((s) => s.mta === 'postfix')?.result;
  const yes = (ok: boolean | undefined) => (ok === undefined ? 'n/a' : ok ? 'yes' : 'NO');
  return [
    {
      target: 'delivered msgs/s >= 1.5x Postfix',
      measured: mf && pf ? ratio(mf.msgsPerSec, pf.msgsPerSec) : '-',
      met: yes(mf && pf ? mf.msgsPerSec >= 1.5 * pf.msgsPerSec : undefined),
    },
    {
      target: 'connections opened per message <= 0.02',
      measured: mf ? num(mf.connectionsPerMsg, 4) : '-',
      met: yes(mf ? mf.connectionsPerMsg <= 0.02 : undefined),
    },
    {
      target: 'CPU per message <= Postfix',
      measured: mf && pf ? ratio(mf.cpuMsPerMsg, pf.cpuMsPerMsg) : '-',
      met: yes(mf && pf ? mf.cpuMsPerMsg <= pf.cpuMsPerMsg : undefined),
    },
  ];
}

export function targetTable(sides: readonly SideResult[]): string {
  return table(
    ['target', 'measured', 'met'],
    targets(sides).map((t) => [t.target, t.measured, t.met]),
    'lrl',
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string', default: '20000' },
      domains: { type: 'string', default: '20' },
      size: { type: 'string', default: '2048' },
      only: { type: 'string' },
      port: { type: 'string' },
      'time-limit': { type: 'string', default: '120' },
      timeout: { type: 'string', default: '900' },
      'no-warmup': { type: 'boolean', default: false },
      'deliver-mx': { type: 'string', default: '{}' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  const messages = Math.max(1, Math.floor(Number(values.messages) || 0));
  const domainCount = Math.min(200, Math.max(1, Math.floor(Number(values.domains) || 0)));
  const size = Math.max(256, Math.floor(Number(values.size) || 2048));
  const timeLimitMs = Math.max(1, Number(values['time-limit']) || 120) * 1000;
  const timeoutMs = Math.max(10, Number(values.timeout) || 900) * 1000;
  const warmup = values['no-warmup'] ? 0 : warmupFor(messages);
  const only = values.only?.trim().toLowerCase();
  if (only !== undefined && !MTAS.includes(only as MtaName))
    throw new Error(`unknown MTA "${only}" (mailframe or postfix)`);
  const mtas = MTAS.filter((m) => only === undefined || m === only);
  const domains = domainNames(domainCount);
  const deliverMx = JSON.parse(values['deliver-mx'] ?? '{}') as unknown;
  if (typeof deliverMx !== 'object' || deliverMx === null || Array.isArray(deliverMx))
    throw new Error('--deliver-mx takes a JSON object of deliver-mx settings');

  const sinkBin = findProgram('smtp-sink');
  if (!sinkBin) throw new Error(`smtp-sink: ${SMTP_SINK_MISSING}`);

  // Everything started is stopped here, on success, failure, the hard timeout or Ctrl-C.
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  };
  const abort = (why: string) => {
    log(`bench:outbound: ${why}: stopping everything`);
    void cleanup().finally(() => process.exit(1));
  };
  const hardTimer = setTimeout(() => abort(`hard timeout of ${timeoutMs / 1000} s`), timeoutMs);
  hardTimer.unref();
  const onSignal = () => abort('interrupted');
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const started = new Date();
  const sides: SideResult[] = [];
  try {
    const sinkPort = values.port ? Number(values.port) : await freePort();
    log(
      `outbound bench: ${messages} messages of ${size} octets to ${domainCount} domains` +
        `${warmup ? ` (after a warm-up of ${warmup})` : ''}; smtp-sinks on ${sinkAddress(0)}..${sinkAddress(domainCount - 1)}:${sinkPort}`,
    );
    const sinks = await startSinks(sinkBin, domains, sinkPort);
    cleanups.push(sinks.stop);
    const o: BatchOptions = { domains, size, timeLimitMs };
    for (const name of mtas) {
      const t = performance.now();
      try {
        let mta: Mta;
        if (name === 'mailframe') {
          const missing = deliverMxUnavailable();
          if (missing) throw new Error(missing);
          const dns = await startDns(domains);
          cleanups.push(dns.close);
          mta = await startMailframe({
            domains,
            sinkPort,
            dnsServer: dns.server,
            timeoutMs,
            deliverMx: deliverMx as Record<string, unknown>,
          });
        } else {
          const missing = postfixUnavailable();
          if (missing) {
            sides.push({ mta: name, skipped: missing });
            log(`  postfix: ${missing}`);
            continue;
          }
          mta = postfixMta(
            await startPostfix(
              domains.map((domain, i) => ({ domain, address: sinkAddress(i) })),
              sinkPort,
            ),
          );
        }
        cleanups.push(mta.stop);
        try {
          const result = await measureMta(mta, sinks, messages, warmup, o);
          sides.push({ mta: name, result });
          log(
            `  ${name}: ${num(result.msgsPerSec, 0)} msgs/s, ${num(result.connectionsPerMsg, 4)} connections/msg, ` +
              `${num(result.cpuMsPerMsg, 3)} ms CPU/msg (${((performance.now() - t) / 1000).toFixed(0)} s in all)`,
          );
        } catch (err) {
          throw new Error(`${err instanceof Error ? err.message : String(err)}\n${mta.output()}`);
        } finally {
          await mta.stop();
        }
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        const first = msg.split('\n')[0] ?? msg;
        const why = first.startsWith('failed:') ? first : `failed: ${first}`;
        sides.push({ mta: name, skipped: why });
        log(`  ${name}: ${msg}`);
      }
    }
  } finally {
    await cleanup();
    clearTimeout(hardTimer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  process.stdout.write(
    `\nOutbound: ${messages} messages of ${size} octets to ${domainCount} domains, one smtp-sink each\n` +
      `${resultTable(sides)}\n\nTargets (mailframe against Postfix, same run)\n${targetTable(sides)}\n`,
  );
  const resultsDir = join(ROOT, 'bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  const file = join(resultsDir, `outbound-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  const report = {
    kind: 'outbound',
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    options: { messages, domains: domainCount, size, warmup, timeLimitMs, only, deliverMx },
    results: sides,
    targets: targets(sides),
  };
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`\nresults: ${file}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(
    `bench:outbound: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
