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
 *   npm run bench:outbound -- [--messages 20000] [--domains 20] [--only mailframe|postfix] [--runs 1]
 *                             [--port N] [--time-limit 120] [--timeout 900] [--no-warmup]
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { type LoadResult, runLoad } from './loadgen.ts';
import { deliverMxUnavailable, type Mta, postfixMta, startDns, startMailframe } from './outbound-mtas.ts';
import {
  type BatchResult,
  MTAS,
  type MtaName,
  medianResult,
  resultTable,
  type SideResult,
  targets,
  targetTable,
} from './outbound-report.ts';
import { postfixUnavailable, startPostfix } from './postfix.ts';
import { num, sumErrorDetail } from './report.ts';
import { writeResults } from './results.ts';
import { findProgram, freePort, SMTP_SINK_MISSING } from './servers.ts';
import { openConnections, type SinkCounts, type SinkFarm, sinkAddress, startSinks } from './sinks.ts';
import { warmupFor } from './workloads.ts';

const USAGE = `Usage: npm run bench:outbound -- [options]

  --messages N      Messages delivered in the measured batch (default 20000, at most 200000).
  --domains N       Destination domains d01.bench.test ..., one smtp-sink each (default 20, at most 200).
  --size N          Octets per message, headers included (default 2048).
  --only NAME       mailframe or postfix (default: both; Postfix when installed).
  --port N          The sinks' port, the "remote port" standing in for 25 (default: a free one).
  --time-limit S    Give up waiting for one batch's delivery after S seconds (default 120).
  --timeout S       Hard limit for the whole run: everything is stopped after S seconds (default 900).
  --runs N          Runs per MTA, each on a fresh instance; the median of each figure is reported (default 1).
  --no-warmup       Skip the unmeasured warm-up batch (half the messages, at most 10,000).
  --deliver-mx JSON More deliver-mx settings for mailframe's side, e.g. '{"concurrency":400}'.
  --queue JSON      More queue-fs settings for mailframe's side, e.g. '{"perDestination":5}'.
  --help
`;

/** Bounds on the load, whatever the options say. */
const MAX_MESSAGES = 200_000;

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
  return {
    accepted: results.reduce((s, r) => s + r.messages, 0),
    errors: results.reduce((s, r) => s + r.errors, 0),
    errorDetail: Object.fromEntries(
      Object.entries(sumErrorDetail(results)).map(([k, v]) => [`queueing ${k}`, v]),
    ),
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

// ---- the run ----

function domainNames(n: number): string[] {
  const width = Math.max(2, String(n).length);
  return Array.from({ length: n }, (_, i) => `d${String(i + 1).padStart(width, '0')}.bench.test`);
}

/** A command-line option holding a JSON object of plugin settings. */
function jsonObject(option: string, text: string | undefined): Record<string, unknown> {
  const value = JSON.parse(text ?? '{}') as unknown;
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error(`${option} takes a JSON object of settings`);
  return value as Record<string, unknown>;
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
      runs: { type: 'string', default: '1' },
      'deliver-mx': { type: 'string', default: '{}' },
      queue: { type: 'string', default: '{}' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  const messages = Math.min(MAX_MESSAGES, Math.max(1, Math.floor(Number(values.messages) || 0)));
  const runs = Math.max(1, Math.floor(Number(values.runs) || 1));
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
  const deliverMx = jsonObject('--deliver-mx', values['deliver-mx']);
  const queue = jsonObject('--queue', values.queue);

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
    const dns = mtas.includes('mailframe') && !deliverMxUnavailable() ? await startDns(domains) : undefined;
    if (dns) cleanups.push(dns.close);
    /** A fresh instance of the MTA (stopped by `measureMta`, or by the cleanup). */
    const start = async (name: MtaName): Promise<Mta> => {
      const mta =
        name === 'mailframe'
          ? await startMailframe({
              domains,
              sinkPort,
              dnsServer: dns?.server ?? '',
              timeoutMs,
              deliverMx,
              queue,
            })
          : postfixMta(
              await startPostfix(
                domains.map((domain, i) => ({ domain, address: sinkAddress(i) })),
                sinkPort,
              ),
            );
      cleanups.push(mta.stop);
      return mta;
    };
    for (const name of mtas) {
      const missing = name === 'mailframe' ? deliverMxUnavailable() : postfixUnavailable();
      if (missing) {
        sides.push({ mta: name, runs: [], skipped: missing });
        log(`  ${name}: ${missing}`);
        continue;
      }
      const results: BatchResult[] = [];
      let failure: string | undefined;
      for (let i = 1; i <= runs; i++) {
        const t = performance.now();
        let mta: Mta | undefined;
        try {
          mta = await start(name);
          const r = await measureMta(mta, sinks, messages, warmup, o);
          results.push(r);
          log(
            `  ${name} run ${i}/${runs}: ${num(r.msgsPerSec, 0)} msgs/s, ${num(r.connectionsPerMsg, 4)} connections/msg, ` +
              `${num(r.cpuMsPerMsg, 3)} ms CPU/msg (${((performance.now() - t) / 1000).toFixed(0)} s in all)`,
          );
        } catch (err) {
          const msg = err instanceof Error ? err.message : String(err);
          failure = `failed: ${msg.split('\n')[0] ?? msg}`;
          log(`  ${name} run ${i}/${runs}: ${msg}\n${mta?.output() ?? ''}`);
        } finally {
          await mta?.stop();
        }
      }
      sides.push({
        mta: name,
        runs: results,
        ...(results.length ? { result: medianResult(results) } : { skipped: failure ?? 'no result' }),
      });
    }
  } finally {
    await cleanup();
    clearTimeout(hardTimer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  process.stdout.write(
    `\nOutbound: ${messages} messages of ${size} octets to ${domainCount} domains, one smtp-sink each` +
      `${runs > 1 ? `, medians of ${runs} runs` : ''}\n` +
      `${resultTable(sides)}\n\nTargets (mailframe against Postfix, same run)\n${targetTable(sides)}\n`,
  );
  const report = {
    kind: 'outbound',
    options: { messages, domains: domainCount, size, runs, warmup, timeLimitMs, only, deliverMx, queue },
    results: sides,
    targets: targets(sides),
  };
  const file = await writeResults('outbound-', started, report);
  process.stdout.write(`\nresults: ${file}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(
    `bench:outbound: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
