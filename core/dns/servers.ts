/**
 * Name server addresses as the config writes them: `"192.0.2.53"`,
 * `"192.0.2.53:5353"`, `"2001:db8::53"`, `"[2001:db8::53]:5353"`. A bare
 * address means port 53. Addresses only: a resolver cannot look up its own
 * servers' names.
 */
import { getServers } from 'node:dns';
import { isIP } from 'node:net';

export interface NameServer {
  readonly host: string;
  readonly port: number;
}

/** Parse one server string; `undefined` when it is not an address with an optional port. */
export function parseNameServer(text: string): NameServer | undefined {
  let host = text;
  let port = 53;
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1] as string;
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
    if (isIP(host) !== 6) return undefined;
  } else if (isIP(text) === 6) {
    host = text;
  } else {
    const v4 = /^([^:]+):(\d{1,5})$/.exec(text);
    if (v4) {
      host = v4[1] as string;
      port = Number(v4[2]);
    }
    if (isIP(host) === 0) return undefined;
  }
  if (port < 1 || port > 65535) return undefined;
  return { host: canonicalAddress(host), port };
}

/** IPv6 in its compressed lower-case form, as a datagram's source address is reported. */
function canonicalAddress(host: string): string {
  if (isIP(host) !== 6 || host.includes('%')) return host;
  try {
    return new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host;
  }
}

/** The servers the operating system is configured with (`/etc/resolv.conf` on Unix), read once. */
export function systemNameServers(): NameServer[] {
  const out: NameServer[] = [];
  for (const s of getServers()) {
    const parsed = parseNameServer(s);
    if (parsed) out.push(parsed);
  }
  // No configured server: the resolver library's own default, a server on this host.
  return out.length > 0 ? out : [{ host: '127.0.0.1', port: 53 }];
}

export function formatNameServer(s: NameServer): string {
  return isIP(s.host) === 6 ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}
