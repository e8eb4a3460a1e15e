/**
 * The static mailbox and list tables VRFY and EXPN answer from, matched
 * case-insensitively by whole address or by local part alone, and the parsing
 * of the command's argument.
 */

export type Lookup<T> =
  | { readonly kind: 'none' }
  | { readonly kind: 'one'; readonly key: string; readonly value: T }
  | { readonly kind: 'ambiguous' };

/** The argument without a trailing ` SMTPUTF8` parameter (RFC 6531 section 3.7.4), and whether it had one. */
export function splitSmtputf8(argument: string): { query: string; utf8: boolean } {
  const s = argument.trim();
  const m = /^(.*\S) +SMTPUTF8$/i.exec(s);
  return m ? { query: m[1] as string, utf8: true } : { query: s, utf8: false };
}

/** Strip one pair of angle brackets and surrounding spaces from a VRFY/EXPN argument. */
export function normaliseQuery(argument: string): string {
  const s = argument.trim();
  return (s.startsWith('<') && s.endsWith('>') ? s.slice(1, -1).trim() : s).toLowerCase();
}

export class Directory<T> {
  readonly #byAddress = new Map<string, { key: string; value: T }>();
  readonly #byLocal = new Map<string, Array<{ key: string; value: T }>>();

  constructor(entries: Iterable<readonly [string, T]>) {
    for (const [key, value] of entries) {
      const lower = key.toLowerCase();
      const entry = { key, value };
      this.#byAddress.set(lower, entry);
      const at = lower.lastIndexOf('@');
      const local = at === -1 ? lower : lower.slice(0, at);
      const list = this.#byLocal.get(local) ?? [];
      list.push(entry);
      this.#byLocal.set(local, list);
    }
  }

  /** Find by `local@domain` (exact) or `local` (may be ambiguous across domains). */
  find(query: string): Lookup<T> {
    const q = normaliseQuery(query);
    if (q === '') return { kind: 'none' };
    const exact = this.#byAddress.get(q);
    if (exact) return { kind: 'one', ...exact };
    if (q.includes('@')) return { kind: 'none' };
    const matches = this.#byLocal.get(q) ?? [];
    const [only] = matches;
    if (!only) return { kind: 'none' };
    return matches.length === 1 ? { kind: 'one', ...only } : { kind: 'ambiguous' };
  }
}
