/**
 * Where a recipient's Maildir is: an explicit `mailboxes` entry, or the
 * `layout` template filled with the address's parts. Parts are lower-cased and
 * sanitised so that nothing in an address (`..`, `/`, `\`, NUL) can name a
 * directory outside the root.
 */
import { isAbsolute, relative, resolve } from 'node:path';
import { unquotedLocalPart } from '../../core/address.ts';

export interface MailboxResolverOptions {
  /** Directory all layout paths (and relative `mailboxes` paths) live under. */
  readonly root: string;
  /** Template relative to root: `{domain}`, `{local}`, `{user}` (local part before `+`), `{root}`. */
  readonly layout: string;
  /** Address (case-insensitive) to directory; when given, only these addresses have mailboxes. */
  readonly mailboxes?: Readonly<Record<string, string>>;
}

/** Split `local@domain` at the last `@`; a quoted local part is unquoted. */
export function splitAddress(address: string, fallbackDomain: string): { local: string; domain: string } {
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  const domain = at < 0 ? fallbackDomain : address.slice(at + 1);
  const quoted = local.length >= 2 && local.endsWith('"');
  return { local: quoted ? unquotedLocalPart(local) : local, domain };
}

/**
 * One path segment from untrusted text: lower case; letters, digits and
 * `!#$%&'*+=?^_`{|}~.-` kept, anything else `_`; no leading dot (so never `.`,
 * `..` or a hidden name). Empty when nothing usable is left.
 */
export function safeSegment(text: string): string {
  const lowered = text.normalize('NFC').toLowerCase();
  let out = '';
  for (const ch of lowered) out += /[\p{L}\p{N}!#$%&'*+=?^_`{|}~.-]/u.test(ch) ? ch : '_';
  out = out.replace(/^\.+/, (dots) => '_'.repeat(dots.length));
  return out.slice(0, 200);
}

export type MailboxLookup =
  | { readonly kind: 'path'; readonly dir: string }
  | { readonly kind: 'unknown' }
  | { readonly kind: 'invalid' };

export class MailboxResolver {
  readonly #root: string;
  readonly #layout: string;
  readonly #mailboxes: ReadonlyMap<string, string> | undefined;

  constructor(opts: MailboxResolverOptions) {
    this.#root = resolve(opts.root);
    this.#layout = opts.layout;
    this.#mailboxes = opts.mailboxes
      ? new Map(Object.entries(opts.mailboxes).map(([k, v]) => [k.toLowerCase(), v]))
      : undefined;
  }

  get root(): string {
    return this.#root;
  }

  lookup(address: string, destination: string): MailboxLookup {
    if (this.#mailboxes) {
      const dir = this.#mailboxes.get(address.toLowerCase());
      return dir === undefined ? { kind: 'unknown' } : { kind: 'path', dir: resolve(this.#root, dir) };
    }
    const { local, domain } = splitAddress(address, destination);
    const safeLocal = safeSegment(local);
    const plus = local.indexOf('+');
    const safeUser = plus > 0 ? safeSegment(local.slice(0, plus)) : safeLocal;
    const safeDomain = safeSegment(domain.replace(/\.$/, ''));
    if (safeLocal === '' || safeUser === '' || safeDomain === '') return { kind: 'invalid' };
    const filled = this.#layout.replace(/\{(root|domain|local|user)\}/g, (_m, key: string) => {
      if (key === 'root') return this.#root;
      if (key === 'domain') return safeDomain;
      return key === 'local' ? safeLocal : safeUser;
    });
    const dir = resolve(this.#root, filled);
    const rel = relative(this.#root, dir);
    if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) return { kind: 'invalid' };
    return { kind: 'path', dir };
  }
}
