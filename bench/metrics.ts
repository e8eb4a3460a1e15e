/**
 * `npm run bench:metrics`: what the `metrics` plugin costs on W1 (2 KB, 1
 * rcpt, 10 connections) against mailframe with queue-discard. Configurations,
 * each a fresh server with its own warm-up, run in turn `--runs` times
 * (interleaved, so a busy neighbour on a shared machine hits them alike), and
 * the medians are compared with the baseline:
 *
 * - baseline: the inbound bench's `mailframe-discard`;
 * - metrics: + the `metrics` plugin with its defaults (hook timings on);
 * - metrics-no-hook-timings: the same with `hookTimings: false`.
 *
 * The figure that decides is CPU per message (the server's own CPU time from
 * /proc over the run): throughput on a shared machine moves with the
 * neighbours more than with the plugin.
 *
 *   npm run bench:metrics -- [--quick] [--runs 3] [--time-limit 45]
 */
import { parseArgs } from 'node:util';
import { measure, type RunMetrics } from './measure.ts';
import { writeResults } from './results.ts';
import { type MailframeExtras, mailframeSpec } from './servers.ts';
import { allWorkloads } from './workloads.ts';

/** The target: the plugin costs under 5 % of W1. */
const TARGET = 0.05;

const USAGE = `Usage: npm run bench:metrics -- [--quick] [--runs N] [--time-limit S]

  --quick           A tenth of W1 (2,000 messages).
  --runs N          Runs per configuration, interleaved; medians reported (default 3).
  --time-limit S    Cap each W1 run at S seconds of load (default 45).
`;

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string', default: '3' },
      'time-limit': { type: 'string', default: '45' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  const quick = values.quick ?? false;
  const runs = Math.max(1, Number(values.runs) || 3);
  const timeLimitMs = Math.max(1, Number(values['time-limit']) || 45) * 1000;
  const w1 = allWorkloads(quick).find((w) => w.id === 'W1');
  if (!w1) throw new Error('no W1 workload');
  const started = new Date();
  // Port 0: the endpoint listens on a free port, as in production but without a clash.
  const metrics = (config: Record<string, unknown>) => ({
    plugins: [{ plugin: 'metrics', config: { port: 0, ...config } }],
  });
  const configs: { id: string; what: string; extras: MailframeExtras }[] = [
    { id: 'baseline', what: 'mailframe-discard as in npm run bench', extras: {} },
    { id: 'metrics', what: '+ metrics (defaults: hook timings, process metrics)', extras: metrics({}) },
    {
      id: 'metrics-no-hook-timings',
      what: '+ metrics with hookTimings: false',
      extras: metrics({ hookTimings: false }),
    },
  ];
  log(
    `mailframe metrics bench: W1 (${w1.load.messages} messages), ${configs.length} configurations x ${runs} runs`,
  );
  const results = new Map<string, RunMetrics[]>(configs.map((c) => [c.id, []]));
  for (let run = 1; run <= runs; run++) {
    for (const c of configs) {
      const m = await measure(mailframeSpec('discard', c.extras), w1, {
        timeLimitMs,
        warmup: true,
        generator: 'loadgen',
      });
      log(
        `run ${run} ${c.id}: ${m.msgsPerSec.toFixed(0)} msgs/s, cpu ${m.cpuMsPerMsg.toFixed(4)} ms/msg, errors ${m.errors}${m.capped ? ', CAPPED' : ''}`,
      );
      results.get(c.id)?.push(m);
    }
  }
  const summary = configs.map((c) => {
    const list = results.get(c.id) ?? [];
    return {
      id: c.id,
      what: c.what,
      msgsPerSec: median(list.map((m) => m.msgsPerSec)),
      cpuMsPerMsg: median(list.map((m) => m.cpuMsPerMsg)),
      errors: list.reduce((n, m) => n + m.errors, 0),
      runs: list,
    };
  });
  const base = summary[0];
  const out = [
    '',
    `W1, ${w1.load.messages} messages, median of ${runs} runs each`,
    '',
    '| configuration | msgs/s | CPU ms/msg | errors | msgs/s vs baseline | CPU vs baseline |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const s of summary) {
    const ratio = base ? (s.msgsPerSec / base.msgsPerSec).toFixed(3) : '-';
    const cpu = base ? (s.cpuMsPerMsg / base.cpuMsPerMsg).toFixed(3) : '-';
    out.push(
      `| ${s.id}: ${s.what} | ${s.msgsPerSec.toFixed(0)} | ${s.cpuMsPerMsg.toFixed(4)} | ${s.errors} | ${ratio} | ${cpu} |`,
    );
  }
  const withMetrics = summary[1];
  const verdict =
    base && withMetrics
      ? `target (metrics adds < ${TARGET * 100} % CPU per message on W1): ${withMetrics.cpuMsPerMsg / base.cpuMsPerMsg - 1 < TARGET ? 'MET' : 'NOT MET'} (${((withMetrics.cpuMsPerMsg / base.cpuMsPerMsg - 1) * 100).toFixed(1)} %)`
      : 'target: not judged';
  out.push('', verdict);
  process.stdout.write(`${out.join('\n')}\n`);
  const file = await writeResults('metrics-', started, {
    options: { quick, runs, timeLimitMs },
    summary,
    verdict,
  });
  process.stdout.write(`\nresults: ${file}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:metrics: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
