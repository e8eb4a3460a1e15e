/** Small helpers for writing RFC 5322 header fields. */

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

const pad = (n: number) => String(n).padStart(2, '0');

/** RFC 5322 3.3 date-time in UTC, e.g. `Mon, 23 Nov 2026 16:14:00 +0000`. */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  return (
    `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`
  );
}

/** One line of text safe for a header field body: no CR, LF or other control characters. */
export function oneLine(text: string | readonly string[]): string {
  const s = typeof text === 'string' ? text : text.join(' ');
  return s
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** `Name: value`, folded at spaces so lines stay within `width` octets where possible (RFC 5322 2.2.3). */
export function foldField(name: string, value: string, width = 78): string {
  const words = value.split(' ');
  const lines: string[] = [];
  let line = `${name}:`;
  for (const word of words) {
    if (word === '') continue;
    if (line.length + 1 + word.length > width && line.length > name.length + 1) {
      lines.push(line);
      line = ` ${word}`;
    } else {
      line += ` ${word}`;
    }
  }
  lines.push(line);
  return lines.join('\r\n');
}

export function hasNonAscii(s: string | Buffer): boolean {
  if (typeof s === 'string') return /[^\x00-\x7f]/.test(s);
  for (const b of s) if (b > 0x7f) return true;
  return false;
}
