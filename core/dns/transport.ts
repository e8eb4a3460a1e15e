/**
 * One DNS message exchange with one server: over UDP (a fresh socket on a
 * random port, connected to the server so the kernel drops datagrams from
 * anyone else) or over TCP (two-octet length prefix, RFC 1035 4.2.2). A
 * response counts only when it is a response to this query: same id, one
 * question with the same name, type and class IN. Anything else on UDP is
 * ignored (a spoofing attempt or a late answer to an earlier try) and the
 * exchange keeps waiting until its timeout.
 */
import { createSocket } from 'node:dgram';
import { isIP, connect as tcpConnect } from 'node:net';
import dnsPacket, { type DecodedPacket, type Packet } from 'dns-packet';
import type { NameServer } from './servers.ts';

export interface Query {
  readonly id: number;
  /** Lower case, no trailing dot; `''` is the root. */
  readonly name: string;
  readonly type: string;
  readonly wire: Buffer;
}

export type Outcome =
  | { readonly kind: 'response'; readonly message: DecodedPacket }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'network' }
  /** The server sent something that is not a response to the query (TCP only). */
  | { readonly kind: 'format' };

export function encodeQuery(packet: Packet & { readonly id: number }, name: string, type: string): Query {
  return { id: packet.id, name, type, wire: dnsPacket.encode(packet) };
}

/** A name as the resolver compares it: lower case, no trailing dot (the root is `''`). */
export function comparableName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function answersQuery(message: DecodedPacket, query: Query): boolean {
  if (message.id !== query.id || !message.flag_qr) return false;
  const questions = message.questions ?? [];
  const q = questions[0];
  return (
    questions.length === 1 &&
    q !== undefined &&
    comparableName(q.name) === query.name &&
    q.type === query.type &&
    (q.class ?? 'IN') === 'IN'
  );
}

function decode(buf: Buffer): DecodedPacket | undefined {
  try {
    return dnsPacket.decode(buf);
  } catch {
    return undefined;
  }
}

/** Settle once: clears the timer, the abort listener and the socket. */
function settler(
  resolve: (o: Outcome) => void,
  timeoutMs: number,
  signal: AbortSignal,
  cleanup: () => void,
): (o: Outcome) => void {
  let done = false;
  const finish = (o: Outcome) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    cleanup();
    resolve(o);
  };
  const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs);
  const onAbort = () => finish({ kind: 'network' });
  signal.addEventListener('abort', onAbort);
  return finish;
}

export function exchangeUdp(
  server: NameServer,
  query: Query,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Outcome> {
  if (signal.aborted) return Promise.resolve({ kind: 'network' });
  return new Promise((resolve) => {
    const socket = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    const finish = settler(resolve, timeoutMs, signal, () => socket.close());
    socket.on('error', () => finish({ kind: 'network' }));
    socket.on('message', (buf, from) => {
      if (from.port !== server.port || from.address !== server.host) return;
      const message = decode(buf);
      if (message && answersQuery(message, query)) finish({ kind: 'response', message });
    });
    socket.connect(server.port, server.host, () => {
      socket.send(query.wire, (err) => {
        if (err) finish({ kind: 'network' });
      });
    });
  });
}

export function exchangeTcp(
  server: NameServer,
  query: Query,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Outcome> {
  if (signal.aborted) return Promise.resolve({ kind: 'network' });
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: server.host, port: server.port, noDelay: true });
    const finish = settler(resolve, timeoutMs, signal, () => socket.destroy());
    let buffered = Buffer.alloc(0);
    socket.on('error', () => finish({ kind: 'network' }));
    socket.on('close', () => finish({ kind: 'network' }));
    socket.on('connect', () => {
      const length = Buffer.alloc(2);
      length.writeUInt16BE(query.wire.length);
      socket.write(Buffer.concat([length, query.wire]));
    });
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < 2) return;
      const size = buffered.readUInt16BE(0);
      if (buffered.length < 2 + size) return;
      const message = decode(buffered.subarray(2, 2 + size));
      finish(message && answersQuery(message, query) ? { kind: 'response', message } : { kind: 'format' });
    });
  });
}
