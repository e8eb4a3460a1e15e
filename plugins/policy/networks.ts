/**
 * Client addresses as policy checks group them: the network an address is
 * in (an IPv4 /24, an IPv6 /64: one sender's pool of outbound servers, one
 * customer's allocation), and lists of networks from config.
 */
import { isIP } from 'node:net';
import { addressMatcher, normaliseIp } from '../../core/proxy-protocol.ts';

/** The 16-bit groups of an IPv6 address (zone dropped, `::` and a dotted IPv4 tail expanded). */
function ipv6Groups(address: string): number[] {
  let text = address.split('%')[0] as string;
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (tail) {
    const [a, b, c, d] = tail.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, tail.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const part = (s: string) => (s === '' ? [] : s.split(':').map((g) => Number.parseInt(g, 16)));
  const left = part(head);
  if (rest === undefined) return left;
  const right = part(rest);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

/** RFC 5952 text of eight groups: lower case, no leading zeros, the longest run of two or more zero groups as `::`. */
function ipv6Text(groups: readonly number[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: readonly number[]) => gs.map((g) => g.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

/**
 * The network of `address` in CIDR form: `192.0.2.0/24` for `192.0.2.77`
 * with `ipv4Prefix` 24, `2001:db8:1:2::/64` for `2001:db8:1:2:a:b:c:d` with
 * `ipv6Prefix` 64. An IPv4-mapped IPv6 address counts as IPv4. Anything that
 * is not an IP address (a Unix socket peer) is returned as it is.
 */
export function clientNetwork(address: string, ipv4Prefix: number, ipv6Prefix: number): string {
  // An IPv4-mapped address (`::ffff:192.0.2.7`, any case) as IPv4.
  const ip = normaliseIp(address.toLowerCase());
  const version = isIP(ip.split('%')[0] as string);
  if (version === 4) {
    const value = ip.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
    const size = 2 ** (32 - ipv4Prefix);
    const base = Math.floor(value / size) * size;
    const octets = [24, 16, 8, 0].map((shift) => Math.floor(base / 2 ** shift) % 256);
    return `${octets.join('.')}/${ipv4Prefix}`;
  }
  if (version === 6) {
    const groups = ipv6Groups(ip).map((g, i) => {
      const keep = Math.min(16, Math.max(0, ipv6Prefix - i * 16));
      return keep === 0 ? 0 : g & (0xffff << (16 - keep)) & 0xffff;
    });
    return `${ipv6Text(groups)}/${ipv6Prefix}`;
  }
  return address;
}

/** `10.0.0.0/8`, `2001:db8::/32` or one address; throws naming the setting and entry otherwise. */
function checkNetwork(entry: string, setting: string): string {
  const slash = entry.indexOf('/');
  const addr = slash < 0 ? entry : entry.slice(0, slash);
  const version = isIP(addr);
  if (version === 0) throw new Error(`${setting}: "${entry}" is not an IP address or CIDR`);
  if (slash >= 0) {
    const bits = entry.slice(slash + 1);
    const max = version === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(bits) || Number(bits) > max)
      throw new Error(`${setting}: "${entry}" has a prefix length outside 0-${max}`);
  }
  return entry;
}

/**
 * A matcher for addresses or CIDRs from config (`setting` names the setting
 * in errors). An IPv4 client on a dual-stack socket matches IPv4 entries.
 */
export function networkMatcher(entries: readonly string[], setting: string): (address: string) => boolean {
  if (entries.length === 0) return () => false;
  const matches = addressMatcher(entries.map((e) => checkNetwork(e, setting)));
  return (address) => isIP(address) !== 0 && matches(address);
}
