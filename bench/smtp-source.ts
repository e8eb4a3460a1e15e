/**
 * Postfix's smtp-source as an alternative load generator (`--generator
 * smtp-source`): a C client, so on a 2-core machine it leaves more CPU to the
 * server than the Node generator does. It measures only wall time and the
 * count of completed messages (no per-message latency), speaks HELO and has
 * no pipelining, so pipelined and idle-connection workloads are not run with it.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { LoadOptions, LoadResult } from './loadgen.ts';
import { findProgram } from './servers.ts';

export const SMTP_SOURCE_MISSING = 'smtp-source not installed (sudo bash bench/install-peers.sh)';

/** Why a workload cannot be run with smtp-source, or undefined when it can. */
export function smtpSourceUnsupported(load: Omit<LoadOptions, 'port'>): string | undefined {
  if (!findProgram('smtp-source')) return SMTP_SOURCE_MISSING;
  if (load.pipelining) return 'smtp-source has no pipelining';
  if (load.idle) return 'smtp-source cannot hold idle connections';
  return undefined;
}

export async function runSmtpSource(opts: LoadOptions): Promise<LoadResult> {
  const bin = findProgram('smtp-source');
  const why = smtpSourceUnsupported(opts);
  if (!bin || why) throw new Error(why ?? 'smtp-source not installed');
  const args = [
    '-c',
    '-s',
    String(Math.min(opts.connections, opts.messages)),
    '-m',
    String(opts.messages),
    '-l',
    String(opts.size),
    '-r',
    String(opts.recipients ?? 1),
    ...(opts.churn ? [] : ['-d']),
    '-M',
    'bench.example',
    '-f',
    'loadgen@bench.example',
    '-t',
    `user@${opts.domain ?? 'example.com'}`,
    `${opts.host ?? '127.0.0.1'}:${opts.port}`,
  ];
  await opts.beforeLoad?.();
  const start = performance.now();
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => {
    out = (out + c.toString('latin1')).slice(-256);
  });
  child.stderr.on('data', (c: Buffer) => {
    err = (err + c.toString('utf8')).slice(-2048);
  });
  let capped = false;
  const limit = opts.timeLimitMs ?? Number.POSITIVE_INFINITY;
  const timer = Number.isFinite(limit)
    ? setTimeout(() => {
        capped = true;
        child.kill('SIGTERM');
      }, limit)
    : undefined;
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const elapsedMs = performance.now() - start;
  if (timer) clearTimeout(timer);
  await opts.afterLoad?.();
  // The -c counter prints the running count of completed DATA commands, separated by CR.
  const counts = out.split(/[\r\n]+/).filter((s) => /^\d+$/.test(s));
  const done = Number(counts[counts.length - 1] ?? 0);
  const errorDetail: Record<string, number> = {};
  let errors = 0;
  if (code !== 0 && !capped) {
    errors = Math.max(1, opts.messages - done);
    errorDetail[`smtp-source exit ${code}: ${err.trim().split('\n').pop() ?? ''}`] = errors;
  }
  const secs = elapsedMs / 1000;
  return {
    messages: done,
    attempted: done,
    octetsPerMessage: opts.size,
    elapsedMs,
    msgsPerSec: secs > 0 ? done / secs : 0,
    mbPerSec: secs > 0 ? (done * opts.size) / 1e6 / secs : 0,
    latencyMs: { p50: Number.NaN, p99: Number.NaN, max: Number.NaN },
    errors,
    errorDetail,
    // Killed at the time limit after every message went through: it was waiting on the server (QUIT).
    capped: capped && done < opts.messages,
    stalled: capped && done >= opts.messages,
    idle: { requested: 0, opened: 0, closedEarly: 0 },
  };
}
