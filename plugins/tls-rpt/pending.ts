/**
 * The sessions counted since the last flush, in memory: `record` adds to a
 * map keyed like the store's rows and returns at once (the delivery path
 * never waits on a disk). Memory is bounded per domain and day: at most
 * `maxFailureGroups` distinct failure groups, beyond which failures are
 * folded into one group per result type without details (the store applies
 * the same cap to what is already on disk).
 */
import { domainToASCII } from 'node:url';
import type { TlsSessionEvent } from '../outbound/tls-report.ts';
import { type CounterRow, NO_DETAIL } from './store.ts';

/** `YYYY-MM-DD` of a time, in UTC. */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The policy as the store keys it: JSON of `[type, strings, mx hosts]`. */
export function policyKey(e: TlsSessionEvent): string {
  return JSON.stringify([e.policyType, [...e.policyStrings], [...e.mxHosts]]);
}

/** The failure's grouping fields, in a fixed order, absent ones left out. */
export function detailKey(e: TlsSessionEvent): string {
  if (e.result === 'success') return NO_DETAIL;
  const d: Record<string, string> = {};
  const put = (k: string, v: string | undefined) => {
    if (v !== undefined && v !== '') d[k] = v;
  };
  put('sending-mta-ip', e.sendingMtaIp);
  put('receiving-mx-hostname', e.receivingMxHostname?.toLowerCase());
  put('receiving-mx-helo', e.receivingMxHelo);
  put('receiving-ip', e.receivingIp);
  put('additional-information', e.additionalInformation);
  put('failure-reason-code', e.failureReasonCode);
  return JSON.stringify(d);
}

/** Lower-case A-label domain without a trailing dot; undefined when the event cannot be counted. */
function normalDomain(domain: string): string | undefined {
  const d = domainToASCII(domain.trim().replace(/\.$/, '')).toLowerCase();
  return d === '' ? undefined : d;
}

export class PendingCounters {
  readonly #maxGroups: number;
  #rows = new Map<string, { row: Omit<CounterRow, 'count'>; count: number }>();
  /** Distinct failure groups per day and domain in `#rows`. */
  #groups = new Map<string, number>();

  constructor(maxFailureGroups: number) {
    this.#maxGroups = maxFailureGroups;
  }

  /** Count one session; false when the event was not usable. */
  add(e: TlsSessionEvent): boolean {
    const domain = normalDomain(e.policyDomain);
    if (domain === undefined || !Number.isFinite(e.at)) return false;
    const day = utcDay(e.at);
    const policy = policyKey(e);
    let detail = detailKey(e);
    let key = `${day}\u0000${domain}\u0000${policy}\u0000${e.result}\u0000${detail}`;
    let entry = this.#rows.get(key);
    if (entry === undefined && detail !== NO_DETAIL) {
      const dayKey = `${day}\u0000${domain}`;
      const groups = this.#groups.get(dayKey) ?? 0;
      if (groups >= this.#maxGroups) {
        detail = NO_DETAIL;
        key = `${day}\u0000${domain}\u0000${policy}\u0000${e.result}\u0000${detail}`;
        entry = this.#rows.get(key);
      } else {
        this.#groups.set(dayKey, groups + 1);
      }
    }
    if (entry) entry.count++;
    else this.#rows.set(key, { row: { day, domain, policy, result: e.result, detail }, count: 1 });
    return true;
  }

  /** Put back rows `take` gave out (a flush that failed), adding to what was counted since. */
  restore(rows: readonly CounterRow[]): void {
    for (const { count, ...row } of rows) {
      const key = `${row.day}\u0000${row.domain}\u0000${row.policy}\u0000${row.result}\u0000${row.detail}`;
      const entry = this.#rows.get(key);
      if (entry) {
        entry.count += count;
        continue;
      }
      this.#rows.set(key, { row, count });
      if (row.detail !== NO_DETAIL) {
        const dayKey = `${row.day}\u0000${row.domain}`;
        this.#groups.set(dayKey, (this.#groups.get(dayKey) ?? 0) + 1);
      }
    }
  }

  get size(): number {
    return this.#rows.size;
  }

  /** Hand over everything counted so far and start afresh. */
  take(): CounterRow[] {
    const out = [...this.#rows.values()].map((e) => ({ ...e.row, count: e.count }));
    this.#rows = new Map();
    this.#groups = new Map();
    return out;
  }
}
