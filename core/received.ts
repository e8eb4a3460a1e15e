/** The trace header every SMTP server prepends (RFC 5321 4.4, protocol names from RFC 3848 and RFC 6531). */
import type { Transaction } from './types.ts';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => (n < 10 ? `0${n}` : String(n));

let cachedSecond = -1;
let cachedDate = '';

/** RFC 5322 date-time in UTC, e.g. `Mon, 23 Nov 2026 16:04:42 +0000`. Cached per second. */
export function rfc5322Date(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second === cachedSecond) return cachedDate;
  const d = new Date(second * 1000);
  cachedDate = `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
  cachedSecond = second;
  return cachedDate;
}

/** The `with` protocol keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP..., UTF8SMTP... */
export function protocolName(tx: Transaction): string {
  const s = tx.session;
  const verb = s.helo?.verb;
  let base = verb === 'LHLO' ? 'LMTP' : verb === 'EHLO' ? 'ESMTP' : 'SMTP';
  if (tx.utf8 && base === 'ESMTP') base = 'UTF8SMTP';
  if (base === 'SMTP') return base;
  return base + (s.tls ? 'S' : '') + (s.user !== undefined ? 'A' : '');
}

/** Strip what would break a header field out of client-supplied text. */
function clean(text: string): string {
  return text.replace(/[\x00-\x1f\x7f()\\]/g, '?').slice(0, 255);
}

export function receivedHeader(tx: Transaction, now: number): string {
  const s = tx.session;
  const helo = s.helo ? clean(s.helo.domain) : 'unknown';
  // A client on a Unix socket has no address (RFC 5321 4.4 makes the TCP-info optional).
  const tcpInfo = s.remote.address === '' ? '' : ` ([${s.remote.address}])`;
  let h = `Received: from ${helo}${tcpInfo}\r\n\tby ${s.hostname} (mailframe) with ${protocolName(tx)} id ${tx.id}`;
  if (s.tls) h += `\r\n\t(version=${s.tls.protocol} cipher=${s.tls.cipher})`;
  const only = tx.recipients.length === 1 ? tx.recipients[0] : undefined;
  if (only) h += `\r\n\tfor <${only.address.address}>`;
  return `${h};\r\n\t${rfc5322Date(now)}`;
}
