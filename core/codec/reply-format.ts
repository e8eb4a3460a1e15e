/** Turn reply values into RFC 5321 4.2 reply lines (multi-line with `code-`, enhanced codes per RFC 2034). */
import type { Reply } from '../reply.ts';

const cache = new WeakMap<Reply, [string | undefined, string | undefined]>();

function line(code: number, sep: '-' | ' ', enhanced: string | undefined, text: string): string {
  const clean = text.replace(/[\r\n]+/g, ' ');
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

/** Format a reply; with `enhanced`, each line carries the RFC 3463 code. Frozen replies are cached. */
export function formatReply(r: Reply, enhanced: boolean): string {
  if (!Object.isFrozen(r)) return render(r, enhanced);
  let entry = cache.get(r);
  if (!entry) {
    entry = [undefined, undefined];
    cache.set(r, entry);
  }
  const i = enhanced ? 1 : 0;
  let s = entry[i];
  if (s === undefined) {
    s = render(r, enhanced);
    entry[i] = s;
  }
  return s;
}
