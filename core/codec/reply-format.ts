/** Turn reply values into RFC 5321 4.2 reply lines (multi-line with `code-`, enhanced codes per RFC 2034). */
import { Replies, type Reply } from '../reply.ts';

/** Formatted text of the catalogue replies, without and with enhanced codes. */
const cache = new WeakMap<Reply, [string | undefined, string | undefined]>();
for (const r of Object.values(Replies)) cache.set(r, [undefined, undefined]);

function line(code: number, sep: '-' | ' ', enhanced: string | undefined, text: string): string {
  const clean = text.includes('\r') || text.includes('\n') ? text.replace(/[\r\n]+/g, ' ') : text;
  return enhanced ? `${code}${sep}${enhanced} ${clean}\r\n` : `${code}${sep}${clean}\r\n`;
}

function render(r: Reply, withEnhanced: boolean): string {
  const enhanced = withEnhanced && r.enhanced !== undefined && r.code !== 354 ? r.enhanced : undefined;
  const lines = typeof r.text === 'string' ? [r.text] : r.text.length > 0 ? r.text : [''];
  let out = '';
  for (let i = 0; i < lines.length; i++) {
    out += line(r.code, i === lines.length - 1 ? ' ' : '-', enhanced, lines[i] as string);
  }
  return out;
}

/** Format a reply; with `enhanced`, each line carries the RFC 3463 code. Catalogue replies are cached. */
export function formatReply(r: Reply, enhanced: boolean): string {
  const entry = cache.get(r);
  if (!entry) return render(r, enhanced);
  const i = enhanced ? 1 : 0;
  let s = entry[i];
  if (s === undefined) {
    s = render(r, enhanced);
    entry[i] = s;
  }
  return s;
}
