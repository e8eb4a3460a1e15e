/**
 * For the deliver-mx tests: a DNS zone served on loopback, "remote" mail
 * exchangers (smtp-server) on 127.0.0.2, 127.0.0.3, ... sharing one port that
 * stands in for 25 and counting their connections, and a mailframe server
 * with deliver-mx pointed at both.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import type { Clock } from '../../core/plugin.ts';
import { startTestDnsServer, type TestDnsServer, type TestDnsZone } from '../../core/testkit-dns.ts';
import {
  type DeliveryServer,
  type Peer,
  type PeerOptions,
  startDeliveryServer,
  startPeer,
} from './deliver-helpers.ts';

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

export interface MxServer extends DeliveryServer {
  /** Every log line, parsed (level info and above). */
  readonly logs: ReadonlyArray<Record<string, unknown>>;
}

/** A mailframe server (not listening for mail) with deliver-mx and then `more`, resolving through `dns`. */
export async function startMxServer(
  dns: TestDnsServer,
  config: Record<string, unknown>,
  more: ReadonlyArray<{ plugin: string; config?: Record<string, unknown> }> = [],
  clock?: Clock,
): Promise<MxServer> {
  const logs: Array<Record<string, unknown>> = [];
  const started = await startDeliveryServer([{ plugin: 'deliver-mx', config }, ...more], {
    // A short timeout: the tests' DNS server answers at once or not at all.
    dns: { servers: [dns.address], timeout: 500, attempts: 1 },
    logger: pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) }),
    dirPrefix: 'mailframe-mx-',
    ...(clock ? { clock } : {}),
  });
  return { ...started, logs };
}
