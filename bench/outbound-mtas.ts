/**
 * The MTAs the outbound bench drives, behind one interface: mailframe
 * (queue-fs, deliver-mx resolving through the testkit's DNS server, the bench's
 * delivery gate) and Postfix (see postfix.ts).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestDnsServer, type TestDnsName } from '../core/testkit.ts';
import { controlRequest } from '../plugins/queue/control.ts';
import type { QueueStats } from '../plugins/queue/types.ts';
import type { MtaName } from './outbound-report.ts';
import type { PostfixInstance } from './postfix.ts';
import { cpuMs } from './proc.ts';
import { freePort, launch, nodeBinary, ROOT } from './servers.ts';
import { sinkAddress } from './sinks.ts';

/** What the bench needs from an MTA under test. */
export interface Mta {
  readonly name: MtaName;
  readonly host: string;
  readonly port: number;
  /** Messages queued and waiting for the release. */
  held(): Promise<number>;
  /** Messages still in the queue (0: drained). */
  pending(): Promise<number>;
  /** Work before the measured window (Postfix: move held mail where the queue manager finds it). */
  prepare(): Promise<void>;
  /** Start delivering everything held: the measured window starts right before. */
  release(): Promise<void>;
  /** Hold again what arrives next (after the warm-up). */
  hold(): Promise<void>;
  /** CPU ms of the MTA's processes so far. */
  cpuMs(): number;
  /** The part of `cpuMs` spent writing its log in a process of its own (Postfix's postlogd). */
  logCpuMs(): number;
  /** Stop: every connection to the sinks closes. */
  stop(): Promise<void>;
  /** Recent log or output, for error reports. */
  output(): string;
}

// ---- the MTAs ----

export const DELIVER_MX_MISSING =
  'failed: the deliver-mx plugin is not in this tree (plugins/deliver-mx): merge the MX delivery work first';

export function deliverMxUnavailable(): string | undefined {
  return existsSync(join(ROOT, 'plugins', 'deliver-mx')) ? undefined : DELIVER_MX_MISSING;
}

export interface MailframeSetup {
  readonly domains: readonly string[];
  readonly sinkPort: number;
  readonly dnsServer: string;
  readonly timeoutMs: number;
  /** More deliver-mx settings (`--deliver-mx`). */
  readonly deliverMx: Readonly<Record<string, unknown>>;
  /** More queue-fs settings (`--queue`). */
  readonly queue: Readonly<Record<string, unknown>>;
}

export async function startMailframe(s: MailframeSetup): Promise<Mta> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-bench-outbound-'));
  const releaseFile = join(dir, 'release');
  const port = await freePort();
  const dataDir = join(dir, 'data');
  const config = {
    hostname: 'mailframe.bench.local',
    dataDir,
    listeners: [{ name: 'smtp', host: '127.0.0.1', port, role: 'mx' }],
    limits: { maxConnections: 20_000, maxConnectionsPerIp: 20_000 },
    timeouts: { shutdownGrace: 2000 },
    dns: { servers: [s.dnsServer] },
    log: { level: 'warn', pretty: false },
    plugins: [
      { plugin: 'enhanced-status-codes' },
      { plugin: 'pipelining' },
      { plugin: 'rcpt-local', config: { domains: s.domains } },
      // Holds delivery until the bench releases it (the queue is filled first).
      {
        plugin: join(ROOT, 'bench', 'peers', 'deliver-gate.ts'),
        config: { releaseFile },
        timeout: s.timeoutMs,
      },
      { plugin: 'deliver-mx', config: { ...s.deliverMx, port: s.sinkPort } },
      {
        plugin: 'queue-fs',
        // Jobs at once as Postfix's smtp processes (100) and per destination as its concurrency limit (20).
        config: {
          fsync: true,
          controlSocket: true,
          concurrency: 100,
          perDestination: 20,
          routes: [{ domains: '*', via: 'deliver-mx' }],
          ...s.queue,
        },
      },
    ],
  };
  const file = join(dir, 'mailframe.json');
  await writeFile(file, JSON.stringify(config, null, 2));
  const proc = await launch({
    name: 'mailframe',
    command: nodeBinary(),
    args: [join(ROOT, 'bin', 'mailframe.ts'), 'start', '-c', file],
    port,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  }).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  const socket = join(dataDir, 'queue', 'control.sock');
  const stats = async (): Promise<QueueStats> => {
    const r = await controlRequest(socket, { op: 'stats' });
    if (!r?.ok) throw new Error(`queue stats: ${r ? r.error : 'no control socket'}`);
    return r.result as QueueStats;
  };
  return {
    name: 'mailframe',
    host: proc.host,
    port,
    held: async () => (await stats()).messages,
    pending: async () => (await stats()).messages,
    prepare: async () => {},
    release: () => writeFile(releaseFile, ''),
    hold: () => rm(releaseFile, { force: true }),
    cpuMs: () => cpuMs(proc.pid),
    // It logs from its own process, and at level warn nothing per delivery.
    logCpuMs: () => 0,
    stop: proc.stop,
    output: proc.output,
  };
}

export function postfixMta(pf: PostfixInstance): Mta {
  return {
    name: 'postfix',
    host: pf.host,
    port: pf.port,
    held: async () => pf.held(),
    pending: async () => pf.pending() + pf.held(),
    prepare: () => pf.unhold(),
    release: () => pf.kick(),
    // Everything Postfix's smtpd accepts goes on hold anyway.
    hold: async () => {},
    cpuMs: () => pf.cpuMs(),
    logCpuMs: () => pf.logCpuMs(),
    stop: pf.stop,
    output: pf.logTail,
  };
}

// ---- DNS: the zone the MX side resolves ----

export interface DnsZoneServer {
  /** `host:port` for the core config's `dns.servers`. */
  readonly server: string;
  close(): Promise<void>;
}

/**
 * The testkit's DNS server on loopback, authoritative for `d01.bench.test MX
 * 10 mx.d01.bench.test`, `mx.d01.bench.test A 127.0.0.11`, and so on (no
 * AAAA: those queries get an empty answer).
 */
export async function startDns(domains: readonly string[]): Promise<DnsZoneServer> {
  const zone: Record<string, TestDnsName> = {};
  for (const [i, domain] of domains.entries()) {
    zone[domain] = { MX: [{ preference: 10, exchange: `mx.${domain}` }] };
    zone[`mx.${domain}`] = { A: [sinkAddress(i)] };
  }
  const dns = await startTestDnsServer(zone);
  return { server: dns.address, close: () => dns.close() };
}
