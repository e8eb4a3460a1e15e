/**
 * The EHLO/LHLO answer as a keyword table (RFC 5321 4.1.1.1): every line after
 * the first is `KEYWORD [params...]`. Keywords are case-insensitive.
 */
import type { RemoteReply } from './reply-reader.ts';

export class Capabilities {
  readonly #keywords: ReadonlyMap<string, readonly string[]>;

  constructor(keywords: ReadonlyMap<string, readonly string[]>) {
    this.#keywords = keywords;
  }

  /** Parse a 250 EHLO/LHLO reply. A HELO answer (or nothing) gives an empty table. */
  static fromReply(reply: RemoteReply | undefined): Capabilities {
    const map = new Map<string, readonly string[]>();
    for (const line of reply?.lines.slice(1) ?? []) {
      const [keyword, ...params] = line.trim().split(/\s+/);
      if (!keyword || !/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(keyword)) continue;
      map.set(keyword.toUpperCase(), params);
    }
    return new Capabilities(map);
  }

  static none(): Capabilities {
    return new Capabilities(new Map());
  }

  has(keyword: string): boolean {
    return this.#keywords.has(keyword.toUpperCase());
  }

  params(keyword: string): readonly string[] {
    return this.#keywords.get(keyword.toUpperCase()) ?? [];
  }

  /** RFC 1870: the fixed maximum message size, when the server declares one (0 means none). */
  get maxSize(): number | undefined {
    const value = this.params('SIZE')[0];
    if (value === undefined || !/^\d{1,20}$/.test(value)) return undefined;
    const n = Number(value);
    return n > 0 ? n : undefined;
  }

  /** RFC 4954: the SASL mechanisms offered, upper case. */
  get authMechanisms(): readonly string[] {
    return this.params('AUTH').map((m) => m.toUpperCase());
  }

  /** Keywords for logs. */
  get keywords(): readonly string[] {
    return [...this.#keywords.keys()];
  }
}
