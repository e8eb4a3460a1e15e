/**
 * Summaries of measured runs (median per metric) and the text tables the
 * bench prints: one per workload, then the mailframe/peer ratios.
 */
import type { RunMetrics } from './measure.ts';
import type { ServerName } from './servers.ts';
import { median } from './stats.ts';
import type { Workload } from './workloads.ts';

/** The median of several runs: a run's figures, with errors summed and stalls counted. */
export interface Summary extends Omit<RunMetrics, 'elapsedMs' | 'stalled' | 'idle' | 'errors' | 'capped'> {
  /** Summed over runs. */
  readonly errors: number;
  /** True if any run hit the time limit. */
  readonly capped: boolean;
  /** Runs in which the server stopped answering and connections were cut. */
  readonly stalledRuns: number;
  readonly idle?: Omit<NonNullable<RunMetrics['idle']>, 'rssWithIdleMb'>;
}

/** What drove the load: the Node generator or Postfix's C `smtp-source`. */
export type Generator = 'loadgen' | 'smtp-source';

export interface Cell {
  readonly workload: string;
  readonly server: ServerName;
  /** Absent in results files written before both generators ran in one invocation: `loadgen`. */
  readonly generator?: Generator;
  readonly runs: readonly RunMetrics[];
  readonly summary?: Summary;
  /** Why there is no result: the server is not installed, or every run failed. */
  readonly skipped?: string;
}

/** Error counts by kind, summed over runs. */
export function sumErrorDetail(
  runs: readonly { readonly errorDetail: Readonly<Record<string, number>> }[],
): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const r of runs) {
    for (const [k, v] of Object.entries(r.errorDetail)) sum[k] = (sum[k] ?? 0) + v;
  }
  return sum;
}

export function summarize(runs: readonly RunMetrics[]): Summary {
  const m = (f: (r: RunMetrics) => number) => median(runs.map(f));
  const errorDetail = sumErrorDetail(runs);
  const idleRuns = runs.flatMap((r) => (r.idle ? [r.idle] : []));
  return {
    messages: m((r) => r.messages),
    msgsPerSec: m((r) => r.msgsPerSec),
    mbPerSec: m((r) => r.mbPerSec),
    p50Ms: m((r) => r.p50Ms),
    p99Ms: m((r) => r.p99Ms),
    cpuMsPerMsg: m((r) => r.cpuMsPerMsg),
    mainCpuMsPerMsg: m((r) => r.mainCpuMsPerMsg),
    peakRssMb: m((r) => r.peakRssMb),
    baselineRssMb: m((r) => r.baselineRssMb),
    rssGrowthMb: m((r) => r.rssGrowthMb),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    errorDetail,
    capped: runs.some((r) => r.capped),
    stalledRuns: runs.filter((r) => r.stalled).length,
    ...(idleRuns.length
      ? {
          idle: {
            requested: Math.max(...idleRuns.map((i) => i.requested)),
            opened: Math.min(...idleRuns.map((i) => i.opened)),
            closedEarly: Math.max(...idleRuns.map((i) => i.closedEarly)),
            kbPerIdle: median(idleRuns.map((i) => i.kbPerIdle)),
          },
        }
      : {}),
  };
}

export function num(v: number | undefined, digits: number): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '-';
  return `${a / b >= 10 ? (a / b).toFixed(1) : (a / b).toFixed(2)}x`;
}

/** A text table; `align` has one letter per column: `l` (left) or `r` (right). */
export function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align: string,
): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (align[i] === 'l' ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(r))].join('\n');
}

function notes(w: Workload, cell: Cell, baselines: readonly Cell[]): string {
  const s = cell.summary;
  if (!s) return cell.skipped ?? '';
  const out: string[] = [];
  if (s.capped) out.push(`CAPPED by time limit (${num(s.messages, 0)}/${w.load.messages} msgs)`);
  if (s.stalledRuns) out.push(`STALLED in ${s.stalledRuns} run(s): server stopped answering`);
  if (s.idle) {
    out.push(`idle ${s.idle.opened}/${s.idle.requested} open, ${s.idle.closedEarly} closed early`);
    out.push(`${num(s.idle.kbPerIdle, 1)} KB RSS/idle conn`);
  }
  for (const b of baselines) {
    if (b.summary) out.push(`${ratio(s.msgsPerSec, b.summary.msgsPerSec)} ${b.workload} msgs/s`);
  }
  if (w.kind === 'large') out.push(`RSS +${num(s.rssGrowthMb, 1)} MB`);
  const detail = Object.entries(s.errorDetail)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
  if (detail) out.push(`errors: ${detail.length > 120 ? `${detail.slice(0, 117)}...` : detail}`);
  return out.join('; ');
}

/** The table for one workload, one row per server. */
export function workloadTable(w: Workload, cells: readonly Cell[], all: readonly Cell[]): string {
  const rows = cells.map((c) => {
    const s = c.summary;
    const base = (w.compareWith ?? []).flatMap(
      (id) => all.find((x) => x.workload === id && x.server === c.server) ?? [],
    );
    if (!s) return [c.server, '-', '-', '-', '-', '-', '-', '-', notes(w, c, base)];
    return [
      c.server,
      num(s.msgsPerSec, 0),
      num(s.mbPerSec, 2),
      num(s.p50Ms, 2),
      num(s.p99Ms, 2),
      num(s.cpuMsPerMsg, 3),
      num(s.peakRssMb, 1),
      String(s.errors),
      notes(w, c, base),
    ];
  });
  const header = [
    'server',
    'msgs/s',
    'MB/s',
    'p50 ms',
    'p99 ms',
    'CPU ms/msg',
    'peak RSS MB',
    'errors',
    'notes',
  ];
  return `${w.id}: ${w.title}\n${table(header, rows, 'lrrrrrrrl')}`;
}

/** The cells measured with `generator` (older results files name none: the Node generator). */
export function cellsOf(cells: readonly Cell[], generator: Generator): Cell[] {
  return cells.filter((c) => (c.generator ?? 'loadgen') === generator);
}

const MAILFRAMES: readonly ServerName[] = ['mailframe-discard', 'mailframe-fs'];
const PEERS: readonly ServerName[] = ['smtp-sink', 'smtp-server'];

/** mailframe divided by each peer, per workload (`cells` of one generator). */
export function ratioTable(
  workloads: readonly Workload[],
  cells: readonly Cell[],
  generator: Generator,
): string {
  const rows: string[][] = [];
  for (const w of workloads) {
    for (const mf of MAILFRAMES) {
      const a = cells.find((c) => c.workload === w.id && c.server === mf)?.summary;
      if (!a) continue;
      for (const peer of PEERS) {
        const peerCell = cells.find((c) => c.workload === w.id && c.server === peer);
        const b = peerCell?.summary;
        if (!b) {
          rows.push([w.id, mf, peer, peerCell?.skipped ? 'skipped' : 'not run', '', '', '', '']);
          continue;
        }
        rows.push([
          w.id,
          mf,
          peer,
          ratio(a.msgsPerSec, b.msgsPerSec),
          ratio(a.p50Ms, b.p50Ms),
          ratio(a.p99Ms, b.p99Ms),
          ratio(a.cpuMsPerMsg, b.cpuMsPerMsg),
          ratio(a.peakRssMb, b.peakRssMb),
        ]);
      }
    }
  }
  const header = ['workload', 'mailframe', 'vs peer', 'msgs/s', 'p50', 'p99', 'CPU/msg', 'peak RSS'];
  return [
    `Ratios mailframe / peer, load from ${generator === 'loadgen' ? 'the Node generator' : "Postfix's smtp-source"} (msgs/s: above 1 is faster; p50, p99, CPU/msg, RSS: below 1 is better)`,
    table(header, rows, 'lllrrrrr'),
  ].join('\n');
}

/**
 * The results as one Markdown table (a row per workload and server, medians),
 * as bench/README.md shows them. Large-message rows give MB/s, latency and
 * RSS growth; W3 rows the RSS per idle connection and the ratio to W3-0.
 */
export function markdownTable(workloads: readonly Workload[], cells: readonly Cell[]): string {
  const lines = [
    '| workload | server | msgs/s | MB/s | p50 ms | p99 ms | CPU ms/msg | peak RSS MB | notes |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const w of workloads) {
    for (const c of cells.filter((x) => x.workload === w.id)) {
      const s = c.summary;
      if (!s) {
        lines.push(`| ${w.id} | ${c.server} | | | | | | | ${c.skipped ?? ''} |`);
        continue;
      }
      const notes: string[] = [];
      if (s.capped) notes.push('capped by the time limit');
      if (s.errors > 0) notes.push(`${s.errors} errors`);
      if (s.idle) notes.push(`${num(s.idle.kbPerIdle, 1)} KB per idle connection`);
      for (const id of w.compareWith ?? []) {
        const base = cells.find((x) => x.workload === id && x.server === c.server)?.summary;
        if (base) notes.push(`${ratio(s.msgsPerSec, base.msgsPerSec)} ${id}`);
      }
      if (w.kind === 'large') notes.push(`RSS +${num(s.rssGrowthMb, 1)} MB`);
      const large = w.kind === 'large';
      lines.push(
        `| ${[
          w.id,
          c.server,
          large ? '' : num(s.msgsPerSec, 0),
          num(s.mbPerSec, 1),
          num(s.p50Ms, 2),
          num(s.p99Ms, 2),
          num(s.cpuMsPerMsg, 3),
          num(s.peakRssMb, 0),
          notes.join('; '),
        ].join(' | ')} |`,
      );
    }
  }
  return lines.join('\n');
}
