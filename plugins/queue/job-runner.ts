/**
 * Runs one leased job: offers it to the delivery plugins through the
 * `deliver` hook, turns the answer into per-recipient outcomes (retry or give
 * up per the retry policy), queues the DSNs the sender asked for, records the
 * outcomes durably, then announces them on the `delivered` / `deferred` /
 * `bounced` hooks.
 *
 * Order matters for crash safety: a bounce is queued (durably) before the
 * failure is recorded, so a crash in between repeats the bounce rather than
 * losing it.
 */
import type { Readable } from 'node:stream';
import { domainToASCII } from 'node:url';
import type { Clock, Outbound } from '../../core/plugin.ts';
import { Replies } from '../../core/reply.ts';
import type {
  DeliveryJob,
  DeliveryRecipient,
  EnvelopeAttributes,
  Logger,
  RecipientResult,
} from '../../core/types.ts';
import type { DkimSignerService } from '../dkim-sign/service.ts';
import { buildDsn, type DsnRecipient, headerSection, type ReturnedContent, statusOf } from './bounce.ts';
import { resultsFor } from './delivery-results.ts';
import { envelopeDsnOf, notifyOf, orcptOf } from './dsn-request.ts';
import { formatDuration } from './duration.ts';
import { readAll, readHeaderSection } from './message-read.ts';
import { delayWarningDue, planRetry, type RetryPolicy } from './retry.ts';
import type { Router } from './routes.ts';
import type { Lease, MessageContent, QueueStore, RecipientOutcome } from './types.ts';

export interface BounceOptions {
  /** What to return when the sender gave no RET: the header section or the whole message. */
  readonly returnContent: 'headers' | 'full';
  /** Messages larger than this are returned as headers only, whatever RET says. */
  readonly maxReturnSize: number;
}

export interface RunnerContext {
  readonly store: Pick<QueueStore, 'enqueue' | 'settle'>;
  readonly outbound: Outbound;
  readonly clock: Clock;
  readonly hostname: string;
  readonly policy: RetryPolicy;
  readonly router: Router;
  readonly bounces: BounceOptions;
  readonly log: Logger;
  /** The DKIM signer (the `dkimSigner` service), looked up when a bounce is made. */
  readonly signer?: () => DkimSignerService | undefined;
}

interface Decided {
  outcome: RecipientOutcome;
  readonly result: RecipientResult;
  /** What to report to the sender, if anything. */
  dsn: DsnRecipient | undefined;
}

/** The destination (ASCII, lower case) of an address: its domain part. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return '';
  const domain = address.slice(at + 1);
  if (domain.startsWith('[')) return domain.toLowerCase();
  return (domainToASCII(domain) || domain).toLowerCase();
}

/** A leased job as the delivery plugins see it; its child logger is made on first use. */
class Job implements DeliveryJob {
  readonly id: string;
  readonly destination: string;
  readonly route: string | undefined;
  readonly from: string;
  readonly recipients: readonly DeliveryRecipient[];
  readonly attributes: EnvelopeAttributes;
  readonly attempts: number;
  readonly receivedAt: number;
  readonly size: number;
  readonly #lease: Lease;
  readonly #parentLog: Logger;
  #log: Logger | undefined;

  constructor(lease: Lease, route: string | undefined, log: Logger) {
    this.id = lease.id;
    this.destination = lease.destination;
    this.route = route;
    this.from = lease.from;
    const recipients: DeliveryRecipient[] = [];
    let attempts = 0;
    for (const r of lease.recipients) {
      recipients.push({ address: r.address, attributes: r.attributes });
      if (r.attempts > attempts) attempts = r.attempts;
    }
    this.recipients = recipients;
    this.attributes = lease.attributes;
    this.attempts = attempts;
    this.receivedAt = lease.receivedAt;
    this.size = lease.size;
    this.#lease = lease;
    this.#parentLog = log;
  }

  /** An own property, not a method: a plugin may take `job.stream` apart from the job. */
  readonly stream = (): Readable => this.#lease.stream();

  // Most jobs log nothing below the configured level: no child logger until one is asked for.
  get log(): Logger {
    this.#log ??= this.#parentLog.child({ qid: this.id, destination: this.destination });
    return this.#log;
  }
}

/** The outcome's hook: `delivered`, `bounced` or `deferred`. */
function announce(outbound: Outbound, job: DeliveryJob, d: Decided): Promise<void> {
  if (d.outcome.status === 'delivered') return outbound.delivered(job, d.result);
  if (d.outcome.status === 'failed') return outbound.bounced(job, d.result);
  return outbound.deferred(job, d.result);
}

export function createJobRunner(ctx: RunnerContext): (lease: Lease) => Promise<void> {
  return async (lease) => {
    const route = ctx.router(lease.destination);
    const job = new Job(lease, route, ctx.log);
    let answer: Awaited<ReturnType<Outbound['deliver']>>;
    try {
      answer = await ctx.outbound.deliver(job);
    } catch (err) {
      job.log.error({ err }, 'deliver hook failed');
      answer = Replies.localError;
    }
    if (answer === undefined) {
      job.log.warn({ route: route ?? null }, 'no delivery plugin claimed the job; deferring it');
    }
    const now = ctx.clock.now();
    const results = resultsFor(
      job.recipients.map((r) => r.address),
      answer,
    );
    const decided = lease.recipients.map((r, i) => decide(ctx, lease, r, results[i] as RecipientResult, now));
    if (needsDsnStep(lease, decided)) await sendDsn(ctx, lease, decided, now, job);
    await ctx.store.settle(
      lease,
      decided.map((d) => d.outcome),
      now,
    );
    if (ctx.log.isLevelEnabled('info')) {
      const count = { delivered: 0, deferred: 0, failed: 0 };
      for (const d of decided) count[d.outcome.status]++;
      job.log.info({ route: route ?? null, attempt: job.attempts + 1, ...count }, 'delivery attempt');
    }
    if (decided.length === 1) await announce(ctx.outbound, job, decided[0] as Decided);
    else await Promise.all(decided.map((d) => announce(ctx.outbound, job, d)));
  };
}

/** Whether `sendDsn` has anything to do: a report to queue, or a failure of a bounce to log. */
function needsDsnStep(lease: Lease, decided: readonly Decided[]): boolean {
  if (lease.from === '') return decided.some((d) => d.outcome.status === 'failed');
  return decided.some((d) => d.dsn !== undefined);
}

function decide(
  ctx: RunnerContext,
  lease: Lease,
  r: Lease['recipients'][number],
  result: RecipientResult,
  now: number,
): Decided {
  const notify = notifyOf(r.attributes);
  const base = {
    index: r.index,
    ...(result.reply ? { reply: result.reply } : {}),
    ...(result.mta ? { mta: result.mta } : {}),
    ...(result.mtaAddress ? { mtaAddress: result.mtaAddress } : {}),
  };
  // Made only for a recipient that gets a report (most get none).
  const dsnBase = () => ({
    address: r.address,
    original: orcptOf(r.attributes),
    remoteMta: result.mta,
    diagnostic: result.reply,
    lastAttemptAt: now,
  });
  if (result.status === 'delivered') {
    // RFC 3461 6.2: a next hop that took the NOTIFY parameters over reports success itself.
    const handoff = result.dsnHandoff ?? 'final';
    return {
      outcome: { ...base, status: 'delivered' },
      result,
      dsn:
        notify.success && handoff !== 'passed-on'
          ? {
              ...dsnBase(),
              action: handoff === 'relayed' ? 'relayed' : 'delivered',
              status: statusOf(result.reply, '2.0.0'),
            }
          : undefined,
    };
  }
  if (result.status === 'failed') {
    return {
      outcome: { ...base, status: 'failed' },
      result,
      dsn: notify.failure
        ? { ...dsnBase(), action: 'failed', status: statusOf(result.reply, '5.0.0') }
        : undefined,
    };
  }
  const plan = planRetry(ctx.policy, { receivedAt: lease.receivedAt, failures: r.attempts + 1, now });
  if (plan.action === 'give-up') {
    const age = formatDuration(now - lease.receivedAt);
    return {
      outcome: { ...base, status: 'failed' },
      result: { ...result, status: 'failed' },
      dsn: notify.failure
        ? {
            ...dsnBase(),
            action: 'failed',
            // RFC 3463 X.4.7: delivery time expired (persistent transient failure).
            status: '4.4.7',
            diagnostic: result.reply && {
              ...result.reply,
              text: `${result.reply.text} (gave up after ${r.attempts + 1} attempts in ${age})`,
            },
          }
        : undefined,
    };
  }
  const warn =
    !r.warned && notify.delay && lease.from !== '' && delayWarningDue(ctx.policy, lease.receivedAt, now);
  return {
    outcome: { ...base, status: 'deferred', nextAttemptAt: plan.at, ...(warn ? { warned: true } : {}) },
    result,
    dsn: warn
      ? {
          ...dsnBase(),
          action: 'delayed',
          status: statusOf(result.reply, '4.0.0'),
          willRetryUntil: lease.receivedAt + ctx.policy.maxAge,
        }
      : undefined,
  };
}

async function returnedContent(
  ctx: RunnerContext,
  lease: Lease,
  reportsFailure: boolean,
): Promise<ReturnedContent> {
  const ret = envelopeDsnOf(lease.attributes).ret ?? (ctx.bounces.returnContent === 'full' ? 'FULL' : 'HDRS');
  if (ret === 'FULL' && reportsFailure) {
    if (lease.size <= ctx.bounces.maxReturnSize) {
      return { kind: 'full', message: await readAll(lease.stream(), ctx.bounces.maxReturnSize) };
    }
    return {
      kind: 'headers',
      headers: headerSection(await readHeaderSection(lease.stream())),
      why: 'the whole message is too large to return',
    };
  }
  return { kind: 'headers', headers: await readHeaderSection(lease.stream()) };
}

/**
 * Queue one DSN for the recipients that need one. If it cannot be queued, the
 * failures are turned back into deferrals (and warnings into "not warned") so
 * the report is not lost: the next attempt tries again.
 */
async function sendDsn(
  ctx: RunnerContext,
  lease: Lease,
  decided: Decided[],
  now: number,
  job: { readonly log: Logger },
): Promise<void> {
  const reported = decided.filter((d) => d.dsn !== undefined);
  if (lease.from === '') {
    const failed = decided.filter((d) => d.outcome.status === 'failed');
    if (failed.length > 0) {
      job.log.warn(
        { recipients: failed.map((d) => d.result.recipient) },
        'delivery failed for a message with a null reverse-path: no bounce is sent (bounce of a bounce dropped)',
      );
    }
    return;
  }
  if (reported.length === 0) return;
  try {
    const returned = await returnedContent(
      ctx,
      lease,
      reported.some((d) => d.dsn?.action === 'failed'),
    );
    const dsn = buildDsn({
      reportingMta: ctx.hostname,
      to: lease.from,
      envid: envelopeDsnOf(lease.attributes).envid,
      arrivalDate: lease.receivedAt,
      queueId: lease.id,
      recipients: reported.map((d) => d.dsn as DsnRecipient),
      returned,
      date: now,
    });
    const id = await ctx.store.enqueue(
      {
        from: '',
        recipients: [{ address: lease.from, domain: domainOf(lease.from), attributes: {} }],
        attributes: {
          ...(dsn.eightBit ? { body: '8BITMIME' } : {}),
          ...(dsn.utf8 ? { smtputf8: true } : {}),
        },
        receivedAt: now,
        source: { kind: 'dsn', about: lease.id },
      },
      await signBounce(ctx, dsn.message),
    );
    job.log.info(
      { dsn: id, to: lease.from, actions: reported.map((d) => d.dsn?.action) },
      'delivery status notification queued',
    );
  } catch (err) {
    job.log.error({ err }, 'could not queue a delivery status notification; will try again');
    const retryAt = now + (ctx.policy.schedule.delays[0] ?? 300_000);
    for (const d of reported) {
      const o = d.outcome;
      if (o.status === 'failed') {
        d.outcome = { index: o.index, status: 'deferred', nextAttemptAt: retryAt, ...pickReply(o) };
      } else if (o.warned) {
        d.outcome = { ...o, warned: false };
      }
    }
  }
}

/** The bounce DKIM-signed when a `dkimSigner` has a key for its From domain (the reporting MTA's name). */
async function signBounce(ctx: RunnerContext, message: Buffer): Promise<MessageContent> {
  const signer = ctx.signer?.();
  return signer?.canSign(ctx.hostname) ? signer.sign(message, { domain: ctx.hostname }) : message;
}

function pickReply(o: RecipientOutcome): Partial<RecipientOutcome> {
  return {
    ...(o.reply ? { reply: o.reply } : {}),
    ...(o.mta ? { mta: o.mta } : {}),
    ...(o.mtaAddress ? { mtaAddress: o.mtaAddress } : {}),
  };
}
