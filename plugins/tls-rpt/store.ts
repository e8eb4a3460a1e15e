/**
 * Where the session counters and the report bookkeeping live: one SQLite
 * database (`node:sqlite`, built into Node 24) under the server's data
 * directory. Counters arrive in batches (`add`, one transaction per flush),
 * each row `count = count + n`, so a flush writes only what changed since the
 * last one; what a crash can lose is the batch not flushed yet.
 *
 *   sessions  (day, domain, policy, result, detail) -> count
 *   reports   (day, domain) -> report id, state, attempts, next attempt, URIs done
 *
 * `policy` is the JSON of `[type, strings, mx hosts]`; `detail` the JSON of a
 * failure's grouping fields (`{}` for successes, and for failures folded
 * together once a domain's day has `maxFailureGroups` groups). A day's
 * counters are frozen once its report is created: later events for it are
 * dropped, so a retried report is the same report and none goes out twice.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';

export interface CounterRow {
  readonly day: string;
  readonly domain: string;
  readonly policy: string;
  readonly result: string;
  readonly detail: string;
  readonly count: number;
}

export type ReportState = 'pending' | 'sent' | 'dropped' | 'skipped';

export interface ReportRow {
  readonly day: string;
  readonly domain: string;
  readonly reportId: string;
  readonly state: ReportState;
  readonly attempts: number;
  readonly nextAttemptAt: number;
  /** The rua URIs the report reached already. */
  readonly done: readonly string[];
}

/** `{}`: a success, or failures without (or beyond the cap of) grouping details. */
export const NO_DETAIL = '{}';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS sessions (
  day TEXT NOT NULL,
  domain TEXT NOT NULL,
  policy TEXT NOT NULL,
  result TEXT NOT NULL,
  detail TEXT NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (day, domain, policy, result, detail)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reports (
  day TEXT NOT NULL,
  domain TEXT NOT NULL,
  report_id TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  next_attempt_at INTEGER NOT NULL,
  done TEXT NOT NULL,
  PRIMARY KEY (day, domain)
) WITHOUT ROWID;
`;

export interface AddResult {
  /** Sessions counted. */
  readonly counted: number;
  /** Sessions dropped because their day's report was already made. */
  readonly late: number;
  /** Failures folded into their result type's group because the cap was reached. */
  readonly folded: number;
}

/** A `reports` table row as the store hands it out. */
function reportRow(r: Record<string, string | number>): ReportRow {
  return {
    day: String(r['day']),
    domain: String(r['domain']),
    reportId: String(r['report_id']),
    state: String(r['state']) as ReportState,
    attempts: Number(r['attempts']),
    nextAttemptAt: Number(r['next_attempt_at']),
    done: JSON.parse(String(r['done'])) as string[],
  };
}

export class CounterStore {
  readonly #db: DatabaseSync;
  readonly #maxGroups: number;
  readonly #stmt: {
    reportExists: StatementSync;
    groupExists: StatementSync;
    groupCount: StatementSync;
    upsert: StatementSync;
  };

  constructor(file: string, maxFailureGroups: number) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    this.#db = new DatabaseSync(file);
    // WAL: a flush appends to the log; FULL: a committed flush survives power loss too.
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 1000;');
    this.#db.exec(SCHEMA);
    this.#maxGroups = maxFailureGroups;
    this.#stmt = {
      reportExists: this.#db.prepare('SELECT 1 AS x FROM reports WHERE day = ? AND domain = ?'),
      groupExists: this.#db.prepare(
        'SELECT 1 AS x FROM sessions WHERE day = ? AND domain = ? AND policy = ? AND result = ? AND detail = ?',
      ),
      groupCount: this.#db.prepare(
        `SELECT count(*) AS n FROM sessions WHERE day = ? AND domain = ? AND result <> 'success' AND detail <> '{}'`,
      ),
      upsert: this.#db.prepare(
        `INSERT INTO sessions (day, domain, policy, result, detail, count) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (day, domain, policy, result, detail) DO UPDATE SET count = count + excluded.count`,
      ),
    };
  }

  /** Add a batch of counts in one transaction. */
  add(rows: Iterable<CounterRow>): AddResult {
    let counted = 0;
    let late = 0;
    let folded = 0;
    const frozen = new Map<string, boolean>();
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const row of rows) {
        const dayKey = `${row.day}\u0000${row.domain}`;
        let isFrozen = frozen.get(dayKey);
        if (isFrozen === undefined) {
          isFrozen = this.#stmt.reportExists.get(row.day, row.domain) !== undefined;
          frozen.set(dayKey, isFrozen);
        }
        if (isFrozen) {
          late += row.count;
          continue;
        }
        let detail = row.detail;
        if (row.result !== 'success' && detail !== NO_DETAIL) {
          const exists =
            this.#stmt.groupExists.get(row.day, row.domain, row.policy, row.result, detail) !== undefined;
          if (!exists) {
            const n = Number((this.#stmt.groupCount.get(row.day, row.domain) as { n: number }).n);
            if (n >= this.#maxGroups) {
              detail = NO_DETAIL;
              folded += row.count;
            }
          }
        }
        this.#stmt.upsert.run(row.day, row.domain, row.policy, row.result, detail, row.count);
        counted += row.count;
      }
      this.#db.exec('COMMIT');
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
    return { counted, late, folded };
  }

  /** (day, domain) pairs with counters up to and including `lastDay` and no report yet. */
  unreported(lastDay: string): Array<{ day: string; domain: string }> {
    return this.#db
      .prepare(
        `SELECT DISTINCT s.day AS day, s.domain AS domain FROM sessions s
         WHERE s.day <= ? AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.day = s.day AND r.domain = s.domain)
         ORDER BY s.day, s.domain`,
      )
      .all(lastDay) as Array<{ day: string; domain: string }>;
  }

  /** Freeze a day's counters for a domain under a new report. */
  createReport(day: string, domain: string, reportId: string, now: number): void {
    this.#db
      .prepare(
        `INSERT OR IGNORE INTO reports (day, domain, report_id, state, attempts, next_attempt_at, done)
         VALUES (?, ?, ?, 'pending', 0, ?, '[]')`,
      )
      .run(day, domain, reportId, now);
  }

  /** Reports still to send whose next attempt is due. */
  dueReports(now: number): ReportRow[] {
    const rows = this.#db
      .prepare(
        `SELECT day, domain, report_id, state, attempts, next_attempt_at, done FROM reports
         WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY day, domain`,
      )
      .all(now) as Array<Record<string, string | number>>;
    return rows.map(reportRow);
  }

  /** Every report row (tests and diagnostics). */
  reports(): ReportRow[] {
    const rows = this.#db
      .prepare('SELECT day, domain, report_id, state, attempts, next_attempt_at, done FROM reports')
      .all() as Array<Record<string, string | number>>;
    return rows.map(reportRow);
  }

  /** The counters of one domain's day. */
  counters(day: string, domain: string): CounterRow[] {
    return this.#db
      .prepare(
        `SELECT day, domain, policy, result, detail, count FROM sessions WHERE day = ? AND domain = ?
         ORDER BY policy, result, detail`,
      )
      .all(day, domain) as unknown as CounterRow[];
  }

  /** Record an attempt: the URIs reached so far, and when to try the rest. */
  retryLater(day: string, domain: string, attempts: number, nextAttemptAt: number, done: readonly string[]) {
    this.#db
      .prepare('UPDATE reports SET attempts = ?, next_attempt_at = ?, done = ? WHERE day = ? AND domain = ?')
      .run(attempts, nextAttemptAt, JSON.stringify(done), day, domain);
  }

  /** The report is finished (sent, dropped, or skipped): remember that, forget the counters. */
  finish(
    day: string,
    domain: string,
    state: Exclude<ReportState, 'pending'>,
    attempts: number,
    done: readonly string[],
  ) {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      this.#db
        .prepare('UPDATE reports SET state = ?, attempts = ?, done = ? WHERE day = ? AND domain = ?')
        .run(state, attempts, JSON.stringify(done), day, domain);
      this.#db.prepare('DELETE FROM sessions WHERE day = ? AND domain = ?').run(day, domain);
      this.#db.exec('COMMIT');
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
  }

  /** Forget finished reports of days before `beforeDay` (they can no longer get late events worth refusing). */
  prune(beforeDay: string): number {
    const r = this.#db.prepare(`DELETE FROM reports WHERE state <> 'pending' AND day < ?`).run(beforeDay);
    // Counters that old with no report being sent are events that arrived far too late: not reported.
    this.#db
      .prepare(
        `DELETE FROM sessions WHERE day < ? AND NOT EXISTS
         (SELECT 1 FROM reports r WHERE r.day = sessions.day AND r.domain = sessions.domain)`,
      )
      .run(beforeDay);
    return Number(r.changes);
  }

  close(): void {
    this.#db.close();
  }
}
