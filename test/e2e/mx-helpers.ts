/**
 * For the deliver-mx tests: a DNS zone served on loopback, "remote" mail
 * exchangers (smtp-server) on 127.0.0.2, 127.0.0.3, ... sharing one port that
 * stands in for 25 and counting their connections, and a mailframe server
 * with deliver-mx pointed at both.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Clock } from '../../core/plugin.ts';
import { MailServer } from '../../core/server.ts';
import { startTestDnsServer, type TestDnsServer, type TestDnsZone } from '../../core/testkit-dns.ts';
import { type Peer, type PeerOptions, startPeer } from './deliver-helpers.ts';

/** The test's DNS zone: names to records (see `core/testkit-dns.ts`); a name not listed does not exist. */
export type Zone = TestDnsZone;

/** A DNS server on loopback serving `zone`, closed by the caller. */
export function startDns(zone: Zone): Promise<TestDnsServer> {
  return startTestDnsServer(zone, {});
}

export interface Remote extends Peer {
  readonly address: string;
  /** Connections accepted so far. */
  readonly connections: () => number;
  /** The most connections open at once. */
  readonly maxSimultaneous: () => number;
  /** Connections opening (+1) and ending (-1), each with a sequence number shared by every remote. */
  readonly events: () => ReadonlyArray<readonly [number, number]>;
}

/** Orders the connection events of every remote of the process. */
let sequence = 0;

/** An smtp-server on `address:port` that counts connections. */
export async function startRemote(address: string, port: number, opts: PeerOptions = {}): Promise<Remote> {
  let connections = 0;
  let open = 0;
  let max = 0;
  const peer = await startPeer({ ...opts, listenOn: { address, port } });
  const events: Array<readonly [number, number]> = [];
  peer.server.server.on('connection', (socket: Socket) => {
    connections++;
    open++;
    max = Math.max(max, open);
    events.push([sequence++, 1]);
    // The client's end of the connection (EOF) counts as closed: it arrives before the client's next connection.
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      open--;
      events.push([sequence++, -1]);
    };
    socket.once('end', end);
    socket.once('close', end);
  });
  return {
    ...peer,
    address,
    connections: () => connections,
    maxSimultaneous: () => max,
    events: () => events,
  };
}

/** A port free on 127.0.0.2 (and, most likely, on the neighbouring loopback addresses). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.2', resolve));
  const address = s.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** A TCP server that accepts and closes at once, counting connections: a dead mail exchanger. */
export async function startSlammer(
  address: string,
  port: number,
): Promise<{ connections: () => number; close(): Promise<void> }> {
  let connections = 0;
  const server: Server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(port, address, resolve));
  return {
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface MxServer {
  readonly server: MailServer;
  readonly dataDir: string;
  /** Every log line, parsed (level info and above). */
  readonly logs: ReadonlyArray<Record<string, unknown>>;
  close(): Promise<void>;
}

/** A mailframe server (not listening for mail) with deliver-mx and then `more`, resolving through `dns`. */
export async function startMxServer(
  dns: TestDnsServer,
  config: Record<string, unknown>,
  more: ReadonlyArray<{ plugin: string; config?: Record<string, unknown> }> = [],
  clock?: Clock,
): Promise<MxServer> {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailframe-mx-'));
  const logs: Array<Record<string, unknown>> = [];
  let server: MailServer;
  try {
    server = await MailServer.create({
      config: {
        hostname: 'mx.test.example',
        dataDir,
        // A short timeout: the tests' DNS server answers at once or not at all.
        dns: { servers: [dns.address], timeout: 500, attempts: 1 },
        listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
        plugins: [{ plugin: 'deliver-mx', config }, ...more],
      },
      logger: pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) }),
      ...(clock ? { clock } : {}),
    });
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    server,
    dataDir,
    logs,
    async close() {
      await server.close(0);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
