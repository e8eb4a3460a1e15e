/**
 * The outbound bench's outside counts: smtp-sink's counters, connections open
 * to a port from /proc/net/tcp, and the CPU of a process tree that includes
 * workers that have already exited.
 */
import { execFile } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { treeCpuMs } from '../../bench/proc.ts';
import { nodeBinary } from '../../bench/servers.ts';
import { lastCounts, openConnections } from '../../bench/sinks.ts';
import { SmtpConn } from '../../bench/smtp-conn.ts';

describe('smtp-sink counters', () => {
  it('reads the last of the CR-separated counters', () => {
    const out =
      'sess=0 quit=0 mesg=1\rsess=0 quit=0 mesg=2\rsess=1 quit=1 mesg=2\rsess=12 quit=3 mesg=4567\r';
    expect(lastCounts(out)).toEqual({ sessions: 12, messages: 4567 });
  });

  it('is zero before any counter was printed, and ignores other output', () => {
    expect(lastCounts('')).toEqual({ sessions: 0, messages: 0 });
    expect(lastCounts('smtp-sink: warning: something\n')).toEqual({ sessions: 0, messages: 0 });
  });
});

describe('openConnections', () => {
  it('counts the connections established to a port, and stops counting them once closed', async () => {
    const accepted: Socket[] = [];
    const server = createServer((s) => {
      s.write('220 test\r\n');
      accepted.push(s);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      expect(openConnections(port)).toBe(0);
      const conns = await Promise.all([1, 2, 3].map(() => SmtpConn.open('127.0.0.1', port)));
      expect(openConnections(port)).toBe(3);
      for (const { conn } of conns) conn.destroy();
      for (const s of accepted) s.destroy();
      // The closes reach the server's side of each connection shortly after.
      for (let i = 0; i < 100 && openConnections(port) > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(openConnections(port)).toBe(0);
    } finally {
      for (const s of accepted) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('treeCpuMs', () => {
  it("counts a worker's CPU after it exited (in the parent's reaped-children time)", async () => {
    const before = treeCpuMs(process.pid);
    // The child spins for 200 ms of wall time and prints the CPU it used itself.
    const { stdout } = await promisify(execFile)(nodeBinary(), [
      '-e',
      'const t = Date.now(); while (Date.now() - t < 200); const u = process.cpuUsage(); console.log((u.user + u.system) / 1000)',
    ]);
    const childMs = Number(stdout.trim());
    const after = treeCpuMs(process.pid);
    expect(childMs).toBeGreaterThan(0);
    // Clock ticks are 10 ms: allow two of rounding.
    expect(after - before).toBeGreaterThanOrEqual(childMs - 20);
  });

  it('is NaN for a process that does not exist', () => {
    expect(treeCpuMs(2 ** 22 + 1)).toBeNaN();
  });
});
