/**
 * HAProxy PROXY protocol v1 (text) and v2 (binary) header reader, for
 * listeners behind a load balancer: the client address every hook sees is the
 * one the proxy reports. Only used on listeners that enable it, and only
 * accepted from configured trusted proxies.
 */
import { BlockList, isIP, type Socket } from 'node:net';
import type { Endpoint } from './types.ts';

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** The longest v1 header, CRLF included (the spec's `PROXY UNKNOWN` worst case). */
const V1_MAX = 107;

export interface ProxyHeader {
  /** Undefined for `PROXY UNKNOWN` / v2 LOCAL: keep the socket's own addresses. */
  readonly remote: Endpoint | undefined;
  readonly local: Endpoint | undefined;
}

export type ProxyParse =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'invalid'; readonly reason: string }
  | { readonly kind: 'ok'; readonly header: ProxyHeader; readonly consumed: number };

function parseV1(buf: Buffer): ProxyParse {
  // The limit holds however the header arrives: one packet or several (V1_MAX includes the CRLF).
  const eol = buf.indexOf('\r\n');
  if (eol < 0 ? buf.length >= V1_MAX : eol + 2 > V1_MAX)
    return { kind: 'invalid', reason: 'v1 header too long' };
  if (eol < 0) return { kind: 'need-more' };
  const parts = buf.toString('latin1', 0, eol).split(' ');
  if (parts[1] === 'UNKNOWN')
    return { kind: 'ok', header: { remote: undefined, local: undefined }, consumed: eol + 2 };
  if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6')) {
    return { kind: 'invalid', reason: 'malformed v1 header' };
  }
  const [, family, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const want = family === 'TCP4' ? 4 : 6;
  const sp = Number(sport);
  const dp = Number(dport);
  if (isIP(src) !== want || isIP(dst) !== want || !isPort(sp) || !isPort(dp)) {
    return { kind: 'invalid', reason: 'bad v1 addresses' };
  }
  return {
    kind: 'ok',
    header: {
      remote: { address: normaliseIp(src), port: sp },
      local: { address: normaliseIp(dst), port: dp },
    },
    consumed: eol + 2,
  };
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 65535;
}

/** The 16 octets at `off` as an IPv6 address in its canonical (RFC 5952) text form. */
function ipv6(buf: Buffer, off: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(buf.readUInt16BE(off + i).toString(16));
  // The URL parser applies the RFC 5952 rules (longest run of zero groups, lower case).
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

function parseV2(buf: Buffer): ProxyParse {
  if (buf.length < 16) return { kind: 'need-more' };
  const verCmd = buf[12] as number;
  if (verCmd >> 4 !== 2) return { kind: 'invalid', reason: 'unsupported v2 version' };
  const len = buf.readUInt16BE(14);
  if (buf.length < 16 + len) return { kind: 'need-more' };
  const consumed = 16 + len;
  const cmd = verCmd & 0x0f;
  if (cmd === 0) return { kind: 'ok', header: { remote: undefined, local: undefined }, consumed }; // LOCAL
  if (cmd !== 1) return { kind: 'invalid', reason: 'unsupported v2 command' };
  const fam = (buf[13] as number) >> 4;
  if (fam === 1 && len >= 12) {
    const ip = (o: number) => `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}`;
    return {
      kind: 'ok',
      header: {
        remote: { address: ip(16), port: buf.readUInt16BE(24) },
        local: { address: ip(20), port: buf.readUInt16BE(26) },
      },
      consumed,
    };
  }
  if (fam === 2 && len >= 36) {
    return {
      kind: 'ok',
      header: {
        remote: { address: normaliseIp(ipv6(buf, 16)), port: buf.readUInt16BE(48) },
        local: { address: normaliseIp(ipv6(buf, 32)), port: buf.readUInt16BE(50) },
      },
      consumed,
    };
  }
  return { kind: 'ok', header: { remote: undefined, local: undefined }, consumed }; // AF_UNSPEC / AF_UNIX
}

/**
 * An IPv4 client's address as IPv4: `::ffff:192.0.2.7` (a dual-stack socket,
 * or a proxy reporting it over TCP6) is `192.0.2.7`; any other as it is.
 */
export function normaliseIp(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/** Parse a PROXY header at the start of `buf`. */
export function parseProxyHeader(buf: Buffer): ProxyParse {
  if (buf.length === 0) return { kind: 'need-more' };
  if (buf[0] === 0x0d) {
    const n = Math.min(buf.length, V2_SIGNATURE.length);
    if (!buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n)))
      return { kind: 'invalid', reason: 'bad v2 signature' };
    return n < V2_SIGNATURE.length ? { kind: 'need-more' } : parseV2(buf);
  }
  const n = Math.min(buf.length, 6);
  if (buf.toString('latin1', 0, n) !== 'PROXY '.slice(0, n))
    return { kind: 'invalid', reason: 'no PROXY header' };
  return n < 6 ? { kind: 'need-more' } : parseV1(buf);
}

/** A matcher for trusted proxy addresses given as IPs or CIDRs. */
export function addressMatcher(entries: readonly string[]): (ip: string) => boolean {
  const list = new BlockList();
  for (const e of entries) {
    const [addr, bits] = e.split('/') as [string, string | undefined];
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(bits), type);
  }
  return (ip) => {
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    return list.check(ip, type) || (ip.startsWith('::ffff:') && list.check(ip.slice(7), 'ipv4'));
  };
}

/** Read the PROXY header from a fresh socket; unread bytes after it are put back. */
export function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ProxyHeader> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error('PROXY header timeout')), timeoutMs);
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const r = parseProxyHeader(buf);
      if (r.kind === 'need-more') return;
      if (r.kind === 'invalid') return finish(new Error(r.reason));
      socket.pause();
      if (r.consumed < buf.length) socket.unshift(buf.subarray(r.consumed));
      finish(undefined, r.header);
    };
    const onClose = () => finish(new Error('closed before PROXY header'));
    function finish(err: Error | undefined, header?: ProxyHeader) {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(header as ProxyHeader);
    }
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}
