/**
 * One measured run: start a fresh server process, warm it up, run a workload
 * against it while sampling the server's CPU time and RSS from /proc, stop it.
 */
import { runLoad } from './loadgen.ts';
import { cpuMs, mainThreadCpuMs, RssPoller, rssKb } from './proc.ts';
import type { RunningServer, ServerSpec } from './servers.ts';
import { runSmtpSource } from './smtp-source.ts';
import { type Workload, warmupFor } from './workloads.ts';

export interface RunMetrics {
  readonly messages: number;
  readonly elapsedMs: number;
  readonly msgsPerSec: number;
  readonly mbPerSec: number;
  /** NaN when the generator does not measure latency (smtp-source). */
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Server CPU (user + system) per accepted message, ms: the whole process, every thread. */
  readonly cpuMsPerMsg: number;
  /** The part of `cpuMsPerMsg` on the server's main thread (its event loop), ms. */
  readonly mainCpuMsPerMsg: number;
  readonly peakRssMb: number;
  /** Server RSS right before the load (after warm-up, before idle connections). */
  readonly baselineRssMb: number;
  /** Peak RSS minus baseline. */
  readonly rssGrowthMb: number;
  readonly errors: number;
  readonly errorDetail: Readonly<Record<string, number>>;
  readonly capped: boolean;
  readonly stalled: boolean;
  readonly idle?: {
    readonly requested: number;
    readonly opened: number;
    readonly closedEarly: number;
    readonly rssWithIdleMb: number;
    readonly kbPerIdle: number;
  };
}

export interface MeasureOptions {
  readonly timeLimitMs: number;
  readonly warmup: boolean;
  readonly generator: 'loadgen' | 'smtp-source';
}

const mb = (kb: number) => kb / 1024;
/** Pause between opening the idle connections and the measured load. */
const IDLE_SETTLE_MS = 1000;

async function warmUp(server: RunningServer, w: Workload): Promise<void> {
  if (w.kind === 'large') return;
  const messages = w.warmup ?? warmupFor(w.load.messages);
  await runLoad({ ...w.load, idle: 0, messages, host: server.host, port: server.port, timeLimitMs: 10_000 });
}

export async function measure(spec: ServerSpec, w: Workload, opts: MeasureOptions): Promise<RunMetrics> {
  const server = await spec.start();
  try {
    if (opts.warmup) await warmUp(server, w);
    const pid = server.pid;
    const poller = new RssPoller(pid);
    // Let the server settle (GC, timers) before the baseline.
    await new Promise((r) => setTimeout(r, 200));
    const baselineKb = rssKb(pid);
    poller.start();
    let cpu0 = 0;
    let cpu1 = 0;
    let main0 = 0;
    let main1 = 0;
    let withIdleKb = 0;
    const beforeLoad = async () => {
      // The server has just accepted and greeted the idle connections: let that burst's work (and
      // its garbage collection) finish, so the run measures connections held open, not their arrival.
      if (w.load.idle) await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
      withIdleKb = rssKb(pid);
      cpu0 = cpuMs(pid);
      main0 = mainThreadCpuMs(pid);
    };
    const afterLoad = () => {
      cpu1 = cpuMs(pid);
      main1 = mainThreadCpuMs(pid);
      poller.stop();
    };
    const result =
      opts.generator === 'smtp-source'
        ? await runSmtpSource({
            ...w.load,
            host: server.host,
            port: server.port,
            timeLimitMs: opts.timeLimitMs,
            beforeLoad,
            afterLoad,
          })
        : await runLoad({
            ...w.load,
            host: server.host,
            port: server.port,
            timeLimitMs: opts.timeLimitMs,
            beforeLoad,
            afterLoad,
          });
    const peakKb = poller.peakKb;
    const idle = w.load.idle
      ? {
          requested: result.idle.requested,
          opened: result.idle.opened,
          closedEarly: result.idle.closedEarly,
          rssWithIdleMb: mb(withIdleKb),
          kbPerIdle: result.idle.opened ? (withIdleKb - baselineKb) / result.idle.opened : Number.NaN,
        }
      : undefined;
    return {
      messages: result.messages,
      elapsedMs: result.elapsedMs,
      msgsPerSec: result.msgsPerSec,
      mbPerSec: result.mbPerSec,
      p50Ms: result.latencyMs.p50,
      p99Ms: result.latencyMs.p99,
      cpuMsPerMsg: result.messages ? (cpu1 - cpu0) / result.messages : Number.NaN,
      mainCpuMsPerMsg: result.messages ? (main1 - main0) / result.messages : Number.NaN,
      peakRssMb: mb(peakKb),
      baselineRssMb: mb(baselineKb),
      rssGrowthMb: mb(peakKb - baselineKb),
      errors: result.errors,
      errorDetail: result.errorDetail,
      capped: result.capped,
      stalled: result.stalled,
      ...(idle ? { idle } : {}),
    };
  } finally {
    await server.stop();
  }
}

/** One run on one line: throughput, CPU and p99 per message, errors, and whether it hit a limit. */
export function briefRun(r: RunMetrics): string {
  return (
    `${r.msgsPerSec.toFixed(0)} msgs/s, cpu ${r.cpuMsPerMsg.toFixed(3)} ms/msg, p99 ${r.p99Ms.toFixed(2)} ms, ` +
    `errors ${r.errors}${r.capped ? ', CAPPED' : ''}${r.stalled ? ', STALLED' : ''}`
  );
}
