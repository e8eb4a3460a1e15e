/**
 * `npm run bench`: every workload against every server under test, each run
 * in a fresh server process; prints a table per workload and the
 * mailframe/peer ratios, and writes everything to bench/results/<time>.json.
 *
 *   npm run bench -- [--only W1,W3] [--servers mailframe-discard,smtp-server] [--runs 3] [--quick]
 *                    [--time-limit 45] [--no-warmup] [--generator both|loadgen|smtp-source]
 */
import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { measure, type RunMetrics } from './measure.ts';
import { type Cell, cellsOf, type Generator, ratioTable, summarize, workloadTable } from './report.ts';
import { writeResults } from './results.ts';
import { findProgram, SERVER_NAMES, type ServerName, serverSpec } from './servers.ts';
import { SMTP_SOURCE_MISSING, smtpSourceUnsupported } from './smtp-source.ts';
import { allWorkloads, type Workload } from './workloads.ts';

const USAGE = `Usage: npm run bench -- [options]

  --only IDS        Workloads to run, comma-separated: W1, W1P, W2, W3 (all of W3-*) or
                    W3-0 / W3-1k / W3-10k / W3-10k-full, W4, W5, W6, L (large messages) or
                    L50 / L200. Default: all.
  --servers NAMES   Comma-separated from: ${SERVER_NAMES.join(', ')}. Default: all.
  --runs N          Runs per workload and server; the median is reported (default 1).
  --quick           A tenth of every count (smoke run).
  --time-limit S    Cap each run at S seconds of load (default 45); capped runs are flagged.
  --no-warmup       Skip the unmeasured warm-up before each run.
  --generator G     both (default): every workload with the Node generator, then those
                    Postfix's C smtp-source can drive (no pipelining, no idle connections;
                    it reports no latency) with smtp-source, when installed.
                    loadgen or smtp-source: only that one.
  --help
`;

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** `--only` token matching: exact id, `W3` for `W3-*`, `L` for every large-message run. */
function selected(w: Workload, only: readonly string[] | undefined): boolean {
  if (!only) return true;
  return only.some((t) => {
    const k = t.toUpperCase();
    const id = w.id.toUpperCase();
    return id === k || id.startsWith(`${k}-`) || ((k === 'L' || k === 'LARGE') && w.kind === 'large');
  });
}

function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

function brief(r: RunMetrics): string {
  const parts = [
    `${r.msgsPerSec.toFixed(0)} msgs/s`,
    `p99 ${Number.isFinite(r.p99Ms) ? r.p99Ms.toFixed(2) : '-'} ms`,
    `cpu ${r.cpuMsPerMsg.toFixed(3)} ms/msg`,
    `peak ${r.peakRssMb.toFixed(1)} MB`,
    `errors ${r.errors}`,
  ];
  if (r.idle)
    parts.push(`idle ${r.idle.opened}/${r.idle.requested} (${r.idle.kbPerIdle.toFixed(1)} KB each)`);
  if (r.capped) parts.push('CAPPED');
  if (r.stalled) parts.push('STALLED');
  return parts.join(', ');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      servers: { type: 'string' },
      runs: { type: 'string', default: '1' },
      quick: { type: 'boolean', default: false },
      'time-limit': { type: 'string', default: '45' },
      'no-warmup': { type: 'boolean', default: false },
      generator: { type: 'string', default: 'both' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  const runs = Math.max(1, Number(values.runs) || 1);
  const timeLimitMs = Math.max(1, Number(values['time-limit']) || 45) * 1000;
  const generators = generatorsOf(values.generator ?? 'both');
  const only = values.only
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const serverNames = (values.servers?.split(',').map((s) => s.trim()) ?? [...SERVER_NAMES]) as ServerName[];
  for (const s of serverNames) {
    if (!SERVER_NAMES.includes(s))
      throw new Error(`unknown server "${s}" (known: ${SERVER_NAMES.join(', ')})`);
  }
  const workloads = allWorkloads(values.quick).filter((w) => selected(w, only));
  if (workloads.length === 0) throw new Error(`no workload matches --only ${values.only}`);

  const specs = serverNames.map(serverSpec);
  const unavailable = new Map(specs.map((s) => [s.name, s.unavailable()] as const));
  log(
    `mailframe bench: ${workloads.map((w) => w.id).join(', ')} x ${serverNames.join(', ')}, ${runs} run(s), ` +
      `load from ${generators.join(' then ')}`,
  );
  // `both` without smtp-source: the second pass is reported as skipped, never silently dropped.
  const generatorSkipped =
    values.generator === 'both' && !generators.includes('smtp-source')
      ? `skipped: ${SMTP_SOURCE_MISSING}`
      : undefined;
  if (generatorSkipped) log(`  generator          ${generatorSkipped}`);
  for (const s of specs) {
    const why = unavailable.get(s.name);
    log(`  ${s.name.padEnd(18)} ${why ? why : s.description}`);
  }
  const maxIdle = Math.max(0, ...workloads.map((w) => w.load.idle ?? 0));
  const fdLimit = openFileLimit();
  if (maxIdle + 200 > fdLimit) {
    log(
      `  warning: open-file limit ${fdLimit} < ${maxIdle + 200} needed for idle connections: run "ulimit -n 20000" first`,
    );
  }

  const cells: Cell[] = [];
  const started = new Date();
  for (const generator of generators) {
    // smtp-source cannot pipeline or hold idle connections: those workloads say so once, not per cell.
    const runnable = workloads.filter((w) => generator === 'loadgen' || !smtpSourceUnsupported(w.load));
    const cannot = workloads.filter((w) => !runnable.includes(w));
    if (generators.length > 1) process.stdout.write(`\n== load from ${generator} ==\n`);
    if (cannot.length > 0) {
      const why = cannot.map((w) => `${w.id} (${smtpSourceUnsupported(w.load)})`).join(', ');
      process.stdout.write(`\n${generator} skips: ${why}\n`);
    }
    for (const w of runnable) {
      const here: Cell[] = [];
      for (const spec of specs) {
        const skip = unavailable.get(spec.name);
        if (skip) {
          here.push({ workload: w.id, server: spec.name, generator, runs: [], skipped: skip });
          continue;
        }
        const results: RunMetrics[] = [];
        let failure: string | undefined;
        for (let i = 0; i < runs; i++) {
          try {
            const r = await measure(spec, w, { timeLimitMs, warmup: !values['no-warmup'], generator });
            results.push(r);
            log(`${w.id} ${spec.name} (${generator}) run ${i + 1}/${runs}: ${brief(r)}`);
          } catch (err) {
            failure = `failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
            log(`${w.id} ${spec.name} (${generator}) run ${i + 1}/${runs}: ${failure}`);
          }
        }
        here.push({
          workload: w.id,
          server: spec.name,
          generator,
          runs: results,
          ...(results.length ? { summary: summarize(results) } : { skipped: failure ?? 'no result' }),
        });
      }
      cells.push(...here);
      process.stdout.write(`\n${workloadTable(w, here, cellsOf(cells, generator))}\n`);
    }
    process.stdout.write(`\n${ratioTable(runnable, cellsOf(cells, generator), generator)}\n`);
  }

  const report = {
    memoryGb: totalmem() / 2 ** 30,
    options: {
      only,
      servers: serverNames,
      runs,
      quick: values.quick,
      timeLimitMs,
      warmup: !values['no-warmup'],
      generators,
    },
    skipped: {
      ...Object.fromEntries([...unavailable].filter(([, why]) => why)),
      ...(generatorSkipped ? { 'generator smtp-source': generatorSkipped } : {}),
    },
    workloads,
    results: cells,
  };
  const file = await writeResults('', started, report);
  if (generatorSkipped) process.stdout.write(`\nsecond generator ${generatorSkipped}\n`);
  process.stdout.write(`\nresults: ${file}\n`);
}

/** The generators a `--generator` value asks for; `both` drops smtp-source when it is not installed. */
function generatorsOf(value: string): Generator[] {
  if (value === 'loadgen' || value === 'smtp-source') return [value];
  if (value === 'both') return findProgram('smtp-source') ? ['loadgen', 'smtp-source'] : ['loadgen'];
  throw new Error(`unknown generator "${value}" (both, loadgen or smtp-source)`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
