/**
 * SMTP TLS reporting (RFC 8460). Publishes the `tlsReport` service that
 * delivery plugins tell about every session they attempt under a TLS policy
 * (`plugins/outbound/tls-report.ts`), counts the sessions per policy domain,
 * UTC day and policy, and once a day sends each finished day's aggregate
 * report to the domain's `rua` endpoints: `mailto:` as a message through our
 * own queue, `https:` as a POST.
 *
 * `record` only adds to counters in memory; they are written to a SQLite
 * database under the data directory every `flushInterval` and on close, so a
 * crash loses at most one interval's sessions. The same timer checks, against
 * the server clock, whether a day has become due (after `reportHour` the next
 * day, UTC) and whether a failed send is due again.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { domainToASCII } from 'node:url';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import type { TlsReportSink, TlsSessionEvent } from '../outbound/tls-report.ts';
import { requireDuration } from '../queue/duration.ts';
import { postReport } from './https-post.ts';
import { PendingCounters, utcDay } from './pending.ts';
import { parsePolicyRecords, type ReportEndpoint } from './policy-record.ts';
import { buildReport, reportFilename } from './report.ts';
import { buildReportMail } from './report-mail.ts';
import { CounterStore, type ReportRow } from './store.ts';

const gzipAsync = promisify(gzip);

const DAY = 86_400_000;
const HOUR = 3_600_000;

export const schema = Type.Object(
  {
    submitter: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Our domain as the report names it (`TLS-Report-Submitter`, Subject, file name, `report-id`). Default: the server `hostname`.',
      }),
    ),
    organizationName: Type.Optional(
      Type.String({
        minLength: 1,
        description: '`organization-name` of the reports. Default: `submitter`.',
      }),
    ),
    from: Type.Optional(
      Type.String({
        minLength: 3,
        pattern: '^[^\\s@<>]+@[^\\s@<>]+$',
        description:
          'Address report mail comes from (From and the envelope sender). Default: `noreply-tlsrpt@<submitter>`.',
      }),
    ),
    contactInfo: Type.Optional(
      Type.String({
        minLength: 1,
        description: '`contact-info` of the reports: where the receiving domain may write. Default: `from`.',
      }),
    ),
    reportHour: Type.Integer({
      minimum: 0,
      maximum: 23,
      default: 1,
      description:
        'UTC hour of the next day from which a day’s reports are sent (RFC 8460 4.1 asks for a delay after midnight).',
    }),
    flushInterval: Type.String({
      minLength: 2,
      default: '1m',
      description:
        'How often counters are written to disk and due reports are looked for (`30s`, `1m`, ...). A crash loses at most this much.',
    }),
    maxFailureGroups: Type.Integer({
      minimum: 1,
      default: 100,
      description:
        'Distinct failure groups (result type, sending IP, MX name, HELO, IP, reason) kept per domain and day; further failures are counted under their result type without details.',
    }),
    retries: Type.Integer({
      minimum: 0,
      maximum: 20,
      default: 4,
      description:
        'Further attempts after a report failed to reach an endpoint, before it is dropped (logged).',
    }),
    retryDelay: Type.String({
      minLength: 2,
      default: '1h',
      description:
        'Wait before the first retry; each further retry waits twice as long (RFC 8460 5.5: exponential back-off).',
    }),
    caFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PEM file of CA certificates trusted for `https:` endpoints besides the system roots (a relative path resolves against `dataDir`).',
      }),
    ),
    httpsTimeout: Type.String({
      minLength: 2,
      default: '30s',
      description: 'How long a POST to an `https:` endpoint may take.',
    }),
    keepFinished: Type.String({
      minLength: 2,
      default: '30d',
      description:
        'How long a sent (or dropped) report is remembered, so late sessions for its day are not reported again.',
    }),
  },
  { additionalProperties: false },
);

/** What the plugin publishes besides the sink: driving it from tests and tools. */
export interface TlsRptService extends TlsReportSink {
  /** Write the counters recorded since the last flush to disk. */
  flush(): void;
  /** Flush, then make and send every report due at the server clock's now; resolves when done. */
  runDue(): Promise<void>;
  /** The reports made so far and their state (sent, pending a retry, dropped, skipped). */
  reports(): readonly ReportRow[];
}

declare module '../../core/plugin.ts' {
  interface Services {
    tlsRpt: TlsRptService;
  }
}

/** The day whose report may go out at `now`: the latest day that ended `reportHour` hours ago or earlier. */
export function lastDueDay(now: number, reportHour: number): string {
  return utcDay(now - DAY - reportHour * HOUR);
}

export default definePlugin({
  name: 'tls-rpt',
  description: 'SMTP TLS reporting (RFC 8460): counts TLS policy results per domain, sends daily reports.',
  schema,
  register(api, config) {
    const submitter = (config.submitter ?? api.server.hostname).toLowerCase();
    const from = config.from ?? `noreply-tlsrpt@${submitter}`;
    const organizationName = config.organizationName ?? submitter;
    const contactInfo = config.contactInfo ?? from;
    const flushMs = requireDuration(config.flushInterval, 'flushInterval');
    const retryMs = requireDuration(config.retryDelay, 'retryDelay');
    const httpsTimeoutMs = requireDuration(config.httpsTimeout, 'httpsTimeout');
    const keepMs = requireDuration(config.keepFinished, 'keepFinished');
    const extraCa = config.caFile
      ? readFileSync(resolve(api.server.dataDir, config.caFile), 'utf8')
      : undefined;
    const clock = api.server.clock;
    const log = api.log;

    const pending = new PendingCounters(config.maxFailureGroups);
    // Aborted on close: a POST in flight does not hold up the shutdown.
    const stopping = new AbortController();
    const store = new CounterStore(
      join(api.server.dataDir, 'tls-rpt', `${api.name}.sqlite`),
      config.maxFailureGroups,
    );

    const flush = () => {
      if (pending.size === 0) return;
      const rows = pending.take();
      let r: ReturnType<CounterStore['add']>;
      try {
        r = store.add(rows);
      } catch (err) {
        // Nothing of the batch was written (one transaction): keep it for the next flush.
        pending.restore(rows);
        throw err;
      }
      if (r.late > 0) log.info({ sessions: r.late }, 'sessions for a day already reported were not counted');
      if (r.folded > 0) {
        log.info({ sessions: r.folded, maxFailureGroups: config.maxFailureGroups }, 'failure groups capped');
      }
    };

    const sendTo = async (endpoint: ReportEndpoint, report: ReportRow, gzipped: Buffer, now: number) => {
      const filename = reportFilename(
        submitter,
        report.domain,
        report.day,
        report.reportId.split('@')[0] ?? '',
      );
      if (endpoint.kind === 'https') {
        return postReport(endpoint.uri, gzipped, {
          ...(extraCa ? { extraCa } : {}),
          timeoutMs: httpsTimeoutMs,
          userAgent: `mailframe tls-rpt (${submitter})`,
          signal: stopping.signal,
        });
      }
      const queue = api.service('queue');
      if (!queue) return 'no queue plugin to send report mail through';
      const at = endpoint.address.lastIndexOf('@');
      const domain = domainToASCII(endpoint.address.slice(at + 1)) || endpoint.address.slice(at + 1);
      const message = buildReportMail({
        from,
        to: endpoint.address,
        domain: report.domain,
        submitter,
        reportId: report.reportId,
        filename,
        gzipped,
        date: now,
        day: report.day,
      });
      try {
        const signer = api.service('dkimSigner');
        const id = await queue.enqueue(
          {
            from,
            recipients: [{ address: endpoint.address, domain: domain.toLowerCase(), attributes: {} }],
            attributes: { tlsReport: true },
            receivedAt: now,
            source: { kind: 'local', by: api.name },
          },
          signer ? await signer.sign(message) : message,
        );
        log.debug({ queueId: id, to: endpoint.address }, 'report mail queued');
        return undefined;
      } catch (err) {
        return `could not queue the report mail: ${(err as Error).message}`;
      }
    };

    const attempt = async (report: ReportRow, now: number) => {
      const where = { domain: report.domain, day: report.day, reportId: report.reportId };
      const attempts = report.attempts + 1;
      const failed = (why: string, done: readonly string[]) => {
        if (attempts > config.retries) {
          store.finish(report.day, report.domain, 'dropped', attempts, done);
          log.warn({ ...where, attempts, why }, 'TLS report dropped after its last attempt');
          return;
        }
        const next = now + retryMs * 2 ** (attempts - 1);
        store.retryLater(report.day, report.domain, attempts, next, done);
        log.info(
          { ...where, attempts, why, retryAt: new Date(next).toISOString() },
          'TLS report not sent; will retry',
        );
      };
      const name = `_smtp._tls.${report.domain}`;
      const txt = await api.server.dns.lookup(name, 'TXT');
      if (txt.kind === 'error') return failed(`DNS ${txt.reason} looking up ${name}`, report.done);
      const policy =
        txt.kind === 'answer'
          ? parsePolicyRecords(txt.records)
          : { kind: 'none' as const, why: `${txt.kind}` };
      if (policy.kind === 'none') {
        store.finish(report.day, report.domain, 'skipped', attempts, []);
        log.info({ ...where, why: policy.why }, `no TLS reporting policy at ${name}: no report sent`);
        return;
      }
      const json = buildReport(
        { organizationName, contactInfo, reportId: report.reportId, day: report.day, domain: report.domain },
        store.counters(report.day, report.domain),
      );
      const gzipped = await gzipAsync(Buffer.from(JSON.stringify(json), 'utf8'));
      const done = [...report.done];
      const errors: string[] = [];
      for (const endpoint of policy.endpoints) {
        if (done.includes(endpoint.uri)) continue;
        const why = await sendTo(endpoint, report, gzipped, now);
        if (stopping.signal.aborted) {
          // Stopped half way: keep what was reached, and try the rest after the restart, as due as before.
          if (why === undefined) done.push(endpoint.uri);
          store.retryLater(report.day, report.domain, report.attempts, report.nextAttemptAt, done);
          return;
        }
        if (why === undefined) done.push(endpoint.uri);
        else errors.push(`${endpoint.uri}: ${why}`);
      }
      if (errors.length === 0) {
        store.finish(report.day, report.domain, 'sent', attempts, done);
        log.info({ ...where, to: done }, 'TLS report sent');
        return;
      }
      failed(errors.join('; '), done);
    };

    const pass = async () => {
      flush();
      const now = clock.now();
      store.prune(utcDay(now - keepMs));
      const due = lastDueDay(now, config.reportHour);
      for (const { day, domain } of store.unreported(due)) {
        store.createReport(day, domain, `tlsrpt.${day}.${randomBytes(8).toString('hex')}@${submitter}`, now);
      }
      for (const report of store.dueReports(now)) {
        if (stopping.signal.aborted) return;
        try {
          await attempt(report, clock.now());
        } catch (err) {
          log.error({ err, domain: report.domain, day: report.day }, 'TLS report failed');
        }
      }
    };

    let running: Promise<void> | undefined;
    let closed = false;
    /** Passes run one after another; `running` (the last one, never rejecting) is what close waits for. */
    const runDue = (): Promise<void> => {
      const next = (running ?? Promise.resolve()).then(pass);
      const tracked: Promise<void> = next
        .catch(() => {})
        .finally(() => {
          if (running === tracked) running = undefined;
        });
      running = tracked;
      return next;
    };

    const service: TlsRptService = {
      record(event: TlsSessionEvent) {
        if (closed) return;
        try {
          if (!pending.add(event)) log.debug({ domain: event.policyDomain }, 'TLS session event not usable');
        } catch (err) {
          log.warn({ err }, 'TLS session event not counted');
        }
      },
      flush,
      runDue,
      reports: () => store.reports(),
    };
    api.provide('tlsReport', service);
    api.provide('tlsRpt', service);

    let timer: NodeJS.Timeout | undefined;
    api.onStart(() => {
      // RFC 8460 section 5.3: report mail must be DKIM-signed; `dkim-sign` does it when loaded.
      if (!api.service('dkimSigner')) log.warn('no dkim-sign plugin: TLS reports will go out unsigned');
      timer = setInterval(() => {
        if (running) return;
        runDue().catch((err: unknown) => log.error({ err }, 'TLS reporting pass failed'));
      }, flushMs);
      timer.unref();
    });
    api.onClose(async () => {
      if (timer) clearInterval(timer);
      stopping.abort();
      await running;
      closed = true;
      try {
        flush();
      } finally {
        store.close();
      }
    });
  },
});
