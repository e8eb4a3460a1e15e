/**
 * DMARC aggregate-report data (RFC 7489 section 7.2, appendix C): per UTC
 * day, one row per author domain, source IP, disposition and DMARC-aligned
 * DKIM and SPF results, with the number of messages. Counted in memory and
 * written to `<dir>/<YYYY-MM-DD>.json` now and then and at shutdown, so a
 * report generator can send the reports later. Counts since the last write are
 * lost if the process dies: a report is a statistic, not a ledger.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** One row: what RFC 7489's `<record>` says about a group of messages. */
export interface AggregateRow {
  /** The author domain (RFC5322.From): `identifiers/header_from`. */
  readonly headerFrom: string;
  /** The connecting client: `row/source_ip`. */
  readonly sourceIp: string;
  /** The policy applied: `policy_evaluated/disposition`. */
  readonly disposition: 'none' | 'quarantine' | 'reject';
  /** DMARC-aligned DKIM and SPF: `policy_evaluated/dkim`, `policy_evaluated/spf`. */
  readonly dkim: 'pass' | 'fail';
  readonly spf: 'pass' | 'fail';
  /** The published policy (`p`, or `sp` for a subdomain): `policy_published`. */
  readonly policy: 'none' | 'quarantine' | 'reject';
  count: number;
}

type RowKey = string;

const DAY = 24 * 60 * 60 * 1000;

export class AggregateRecorder {
  readonly #dir: string;
  /** Day (YYYY-MM-DD, UTC) to its rows not yet written. */
  readonly #days = new Map<string, Map<RowKey, AggregateRow>>();
  #writing: Promise<void> = Promise.resolve();
  #dayStart = Number.NaN;
  #day = '';

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** Count one message of day `at` (milliseconds since the epoch). */
  add(at: number, row: Omit<AggregateRow, 'count'>): void {
    const day = this.#dayOf(at);
    let rows = this.#days.get(day);
    if (!rows) {
      rows = new Map();
      this.#days.set(day, rows);
    }
    const key = [row.headerFrom, row.sourceIp, row.disposition, row.dkim, row.spf, row.policy].join(' ');
    const found = rows.get(key);
    if (found) found.count++;
    else rows.set(key, { ...row, count: 1 });
  }

  /** The UTC day of `at` as YYYY-MM-DD (the last one worked out is kept: most messages share it). */
  #dayOf(at: number): string {
    const start = at - (((at % DAY) + DAY) % DAY);
    if (start !== this.#dayStart) {
      this.#dayStart = start;
      this.#day = new Date(start).toISOString().slice(0, 10);
    }
    return this.#day;
  }

  /** Write what was counted into the day files (merged with what they hold), one write at a time. */
  flush(): Promise<void> {
    const days = [...this.#days];
    this.#days.clear();
    this.#writing = this.#writing.then(async () => {
      if (days.length === 0) return;
      await mkdir(this.#dir, { recursive: true });
      for (const [day, rows] of days) await this.#merge(day, rows);
    });
    return this.#writing;
  }

  async #merge(day: string, rows: Map<RowKey, AggregateRow>): Promise<void> {
    const file = join(this.#dir, `${day}.json`);
    let saved: AggregateRow[] = [];
    try {
      saved = (JSON.parse(await readFile(file, 'utf8')) as { rows: AggregateRow[] }).rows;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const merged = new Map<RowKey, AggregateRow>();
    for (const r of [...saved, ...rows.values()]) {
      const key = [r.headerFrom, r.sourceIp, r.disposition, r.dkim, r.spf, r.policy].join(' ');
      const found = merged.get(key);
      if (found) found.count += r.count;
      else merged.set(key, { ...r });
    }
    const tmp = `${file}.tmp`;
    await writeFile(tmp, `${JSON.stringify({ day, rows: [...merged.values()] }, null, 1)}\n`, {
      mode: 0o600,
    });
    await rename(tmp, file);
  }
}
