/**
 * CPU time and memory of a process, from Linux `/proc`: utime+stime of
 * `/proc/<pid>/stat` (clock ticks, converted with `getconf CLK_TCK`), of one
 * process or of a process tree, and VmRSS of `/proc/<pid>/status`. A poller
 * samples RSS every ~50 ms to catch the peak.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let clockTicks: number | undefined;

/** Clock ticks per second (`getconf CLK_TCK`, almost always 100). */
function clkTck(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

export interface ProcSample {
  /** User plus system CPU time consumed so far, in ms. */
  readonly cpuMs: number;
  /** Resident set size now, in KiB (0 if the process is gone). */
  readonly rssKb: number;
}

interface Stat {
  /** The command name (field 2). */
  readonly comm: string;
  /** The fields after the command name: field 3 (the state) is index 0. */
  readonly fields: readonly string[];
}

function readStat(pid: number | string): Stat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    const end = stat.lastIndexOf(')');
    return { comm: stat.slice(stat.indexOf('(') + 1, end), fields: stat.slice(end + 2).split(' ') };
  } catch {
    return undefined;
  }
}

function statFields(pid: number | string): readonly string[] | undefined {
  return readStat(pid)?.fields;
}

const ticksToMs = (ticks: number) => (ticks * 1000) / clkTck();

/** CPU ms (utime + stime) of `pid`; NaN if it cannot be read. */
export function cpuMs(pid: number): number {
  const f = statFields(pid);
  // utime, stime: fields 14 and 15 of stat.
  return f ? ticksToMs(Number(f[11]) + Number(f[12])) : Number.NaN;
}

/**
 * CPU ms (utime + stime) of `pid`'s main thread alone (`/proc/<pid>/task/<pid>`):
 * for a Node server, its event loop (and V8's work on that thread), without
 * libuv's pool, worker threads, or V8's background threads. NaN if it cannot be read.
 */
export function mainThreadCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ticksToMs(Number(f[11]) + Number(f[12]));
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU ms of a whole process tree that forks workers (Postfix's master and its
 * daemons): the root's own time and that of its reaped children (cutime,
 * cstime), plus every living descendant's own and reaped children's time. Two
 * readings subtracted give the tree's CPU between them, including workers that
 * were started and exited in between (their time moves to the parent's
 * cutime/cstime when it reaps them). NaN if the root is gone.
 */
export function treeCpuMs(rootPid: number): number {
  const children = new Map<number, number[]>();
  const own = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(name);
    if (!f) continue;
    const pid = Number(name);
    const ppid = Number(f[1]);
    // utime, stime, cutime, cstime: fields 14 to 17 of stat.
    own.set(pid, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]));
    const list = children.get(ppid);
    if (list) list.push(pid);
    else children.set(ppid, [pid]);
  }
  if (!own.has(rootPid)) return Number.NaN;
  let ticks = 0;
  const stack = [rootPid];
  for (let pid = stack.pop(); pid !== undefined; pid = stack.pop()) {
    ticks += own.get(pid) ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return ticksToMs(ticks);
}

/** Own CPU ms (utime + stime) of the living children of `parentPid` whose command name is `name`. */
export function childrenCpuMs(parentPid: number, name: string): number {
  let ms = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = readStat(entry);
    const f = st?.fields;
    if (f && st.comm === name && Number(f[1]) === parentPid) ms += ticksToMs(Number(f[11]) + Number(f[12]));
  }
  return ms;
}

/** VmRSS of `pid` in KiB; 0 if it cannot be read. */
export function rssKb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'latin1');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function sampleProc(pid: number): ProcSample {
  return { cpuMs: cpuMs(pid), rssKb: rssKb(pid) };
}

/** Polls a process's RSS while running and keeps the peak. */
export class RssPoller {
  readonly pid: number;
  readonly intervalMs: number;
  peakKb = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(pid: number, intervalMs = 50) {
    this.pid = pid;
    this.intervalMs = intervalMs;
  }

  start(): void {
    this.sample();
    this.#timer ??= setInterval(() => this.sample(), this.intervalMs);
    this.#timer.unref();
  }

  sample(): number {
    const kb = rssKb(this.pid);
    if (kb > this.peakKb) this.peakKb = kb;
    return kb;
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.sample();
  }
}
