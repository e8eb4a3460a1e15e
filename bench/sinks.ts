/**
 * The outbound bench's remote servers: one Postfix `smtp-sink` per destination
 * domain, each on its own loopback address (127.0.0.11, .12, ...) and the same
 * port, started with `-c` so it prints running counters. Those counters are the
 * bench's outside count of what the MTA under test did: messages received
 * (`mesg`, at each final dot) and SMTP sessions ended (`sess`: once the MTA
 * has closed every connection, the number it opened).
 */
import { readFileSync } from 'node:fs';
import { launch, type RunningProcess } from './servers.ts';

export interface SinkCounts {
  /** Sessions ended (connections closed). */
  readonly sessions: number;
  /** Messages received (final dots). */
  readonly messages: number;
}

export interface Sink {
  readonly process: RunningProcess;
  /** The domain whose MX (or transport) points here. */
  readonly domain: string;
  readonly address: string;
}

export interface SinkFarm {
  readonly sinks: readonly Sink[];
  readonly port: number;
  /** The counters summed over every sink. */
  counts(): SinkCounts;
  stop(): Promise<void>;
}

const COUNTERS = /sess=(\d+) quit=\d+ mesg=(\d+)/g;

/** The last counters a sink printed (they are separated by CR). */
export function lastCounts(output: string): SinkCounts {
  let sessions = 0;
  let messages = 0;
  for (const m of output.matchAll(COUNTERS)) {
    sessions = Number(m[1]);
    messages = Number(m[2]);
  }
  return { sessions, messages };
}

/**
 * Connections open right now whose local end is `port` (the sinks' side of
 * every connection an MTA holds to them), from /proc/net/tcp: established,
 * or closing but not yet counted by the sink.
 */
export function openConnections(port: number): number {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let n = 0;
  let table: string;
  try {
    table = readFileSync('/proc/net/tcp', 'latin1');
  } catch {
    return 0;
  }
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // local_address, rem_address, st: 01 established, 08 close-wait (the MTA closed, the sink has not yet).
    if (f[1]?.endsWith(hexPort) && (f[3] === '01' || f[3] === '08')) n++;
  }
  return n;
}

/** The loopback address of the i-th sink (0-based): 127.0.0.11 upwards. */
export function sinkAddress(i: number): string {
  return `127.0.0.${11 + i}`;
}

/** Start one smtp-sink per domain on `sinkAddress(i):port`. */
export async function startSinks(bin: string, domains: readonly string[], port: number): Promise<SinkFarm> {
  const asRoot = process.getuid?.() === 0;
  const sinks: Sink[] = [];
  const stop = async () => {
    await Promise.all(sinks.map((s) => s.process.stop()));
  };
  try {
    for (const [i, domain] of domains.entries()) {
      const address = sinkAddress(i);
      const proc = await launch({
        name: `smtp-sink ${address}`,
        command: bin,
        // -c: counters; -m: simultaneous connections (default 256); the last argument is the listen backlog.
        args: [
          '-c',
          '-h',
          `mx.${domain}`,
          '-m',
          '2000',
          ...(asRoot ? ['-u', 'nobody'] : []),
          `${address}:${port}`,
          '4096',
        ],
        host: address,
        port,
      });
      sinks.push({ process: proc, domain, address });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    sinks,
    port,
    counts() {
      let sessions = 0;
      let messages = 0;
      for (const s of sinks) {
        const c = lastCounts(s.process.output());
        sessions += c.sessions;
        messages += c.messages;
      }
      return { sessions, messages };
    },
    stop,
  };
}
