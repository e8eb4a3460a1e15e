/**
 * The outbound bench's results: what one MTA's measured batch gives, the text
 * table `npm run bench:outbound` prints, the targets, and the Markdown
 * `bench/markdown.ts` prints for an outbound results file.
 */
import { num, ratio, sumErrorDetail, table } from './report.ts';
import { median } from './stats.ts';

export const MTAS = ['mailframe', 'postfix'] as const;
export type MtaName = (typeof MTAS)[number];

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
  /** Every run's figures. */
  readonly runs: readonly BatchResult[];
  /** The median of each figure over the runs. */
  readonly result?: BatchResult;
  readonly skipped?: string;
}

/** The median of each figure over runs (errors summed; timed out if any run was). */
export function medianResult(runs: readonly BatchResult[]): BatchResult {
  const m = (f: (r: BatchResult) => number) => median(runs.map(f));
  return {
    messages: m((r) => r.messages),
    errors: runs.reduce((sum, r) => sum + r.errors, 0),
    errorDetail: sumErrorDetail(runs),
    deliverMs: m((r) => r.deliverMs),
    drainMs: m((r) => r.drainMs),
    delivered: m((r) => r.delivered),
    msgsPerSec: m((r) => r.msgsPerSec),
    connections: m((r) => r.connections),
    connectionsPerMsg: m((r) => r.connectionsPerMsg),
    cpuMsPerMsg: m((r) => r.cpuMsPerMsg),
    logCpuMsPerMsg: m((r) => r.logCpuMsPerMsg),
    timedOut: runs.some((r) => r.timedOut),
  };
}

function notesOf(r: BatchResult): string[] {
  const notes: string[] = [];
  if (r.timedOut) notes.push('TIMED OUT');
  if (r.logCpuMsPerMsg > 0) notes.push(`CPU: ${num(r.logCpuMsPerMsg, 3)} ms/msg writing the mail log`);
  const detail = Object.entries(r.errorDetail).map(([k, v]) => `${k}: ${v}`);
  if (detail.length) notes.push(detail.join(', '));
  return notes;
}

const HEADER = ['MTA', 'delivered', 'msgs/s', 'drain s', 'connections', 'conns/msg', 'CPU ms/msg', 'notes'];

/** One row per MTA: the cells of HEADER (empty figures and the reason when it has no result). */
function rows(sides: readonly SideResult[], empty: string): string[][] {
  return sides.map((s) => {
    const r = s.result;
    if (!r) return [s.mta, ...Array<string>(HEADER.length - 2).fill(empty), s.skipped ?? ''];
    return [
      s.mta,
      num(r.delivered, 0),
      num(r.msgsPerSec, 0),
      num(r.drainMs / 1000, 2),
      num(r.connections, 0),
      num(r.connectionsPerMsg, 4),
      num(r.cpuMsPerMsg, 3),
      notesOf(r).join('; '),
    ];
  });
}

export function resultTable(sides: readonly SideResult[]): string {
  return table(HEADER, rows(sides, '-'), 'lrrrrrrl');
}

interface Target {
  readonly target: string;
  readonly measured: string;
  readonly met: string;
}

/** The targets: msgs/s >= 1.5x Postfix's, <= 0.02 connections per message, CPU/msg <= Postfix's. */
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

/** The results as bench/README.md shows them: one Markdown row per MTA, then the targets. */
export function outboundMarkdown(sides: readonly SideResult[]): string {
  const lines = [
    `| ${HEADER.join(' | ')} |`,
    `| --- | ${HEADER.slice(1, -1)
      .map(() => '---:')
      .join(' | ')} | --- |`,
    ...rows(sides, '').map((cells) => `| ${cells.join(' | ')} |`),
    '',
    '| target | measured | met |',
    '| --- | ---: | --- |',
  ];
  for (const t of targets(sides)) lines.push(`| ${t.target} | ${t.measured} | ${t.met} |`);
  return lines.join('\n');
}
