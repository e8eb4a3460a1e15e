/**
 * CPU time and memory of a process, from Linux `/proc`: utime+stime of
 * `/proc/<pid>/stat` (clock ticks, converted with `getconf CLK_TCK`) and VmRSS
 * of `/proc/<pid>/status`. A poller samples RSS every ~50 ms to catch the peak.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clockTicks: number | undefined;

/** Clock ticks per second (`getconf CLK_TCK`, almost always 100). */
export function clkTck(): number {
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

/** CPU ms (utime + stime) of `pid`; NaN if it cannot be read. */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
    return (ticks * 1000) / clkTck();
  } catch {
    return Number.NaN;
  }
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
