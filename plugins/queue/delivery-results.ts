/**
 * Turns what the `deliver` hook answered into one result per recipient of the
 * job: a report is matched by address, a bare reply applies to everyone, and
 * no answer at all (no delivery plugin claimed the job) is a deferral.
 */
import { isReply } from '../../core/hooks.ts';
import { type Reply, reply } from '../../core/reply.ts';
import type { DeliveryReport, RecipientResult } from '../../core/types.ts';

/** Nobody claimed the job: keep it and try again (RFC 3463 4.4.0: routing status). */
export const NO_ROUTE = reply(451, '4.4.0', 'No delivery route for this destination');
/** A report that left a recipient out. */
export const NO_RESULT = reply(451, '4.3.0', 'Delivery result missing for this recipient');

function replyRecord(r: Reply): NonNullable<RecipientResult['reply']> {
  const text = typeof r.text === 'string' ? r.text : r.text.join(' ');
  return r.enhanced === undefined ? { code: r.code, text } : { code: r.code, enhanced: r.enhanced, text };
}

function statusOfCode(code: number): RecipientResult['status'] {
  if (code >= 200 && code < 300) return 'delivered';
  if (code >= 500) return 'failed';
  return 'deferred';
}

/** One result per recipient, in the order of `recipients`. */
export function resultsFor(
  recipients: readonly string[],
  answer: DeliveryReport | Reply | undefined,
): RecipientResult[] {
  if (answer === undefined) {
    return recipients.map((recipient) => ({ recipient, status: 'deferred', reply: replyRecord(NO_ROUTE) }));
  }
  if (isReply(answer)) {
    const status = statusOfCode(answer.code);
    return recipients.map((recipient) => ({ recipient, status, reply: replyRecord(answer) }));
  }
  const reported = answer.results ?? [];
  // The common case, one recipient answered about: no lookup tables.
  const only =
    recipients.length === 1 && reported.length === 1 ? (reported[0] as RecipientResult) : undefined;
  if (only && only.recipient === recipients[0]) return [resultOf(only.recipient, only)];
  const exact = new Map<string, RecipientResult>();
  const folded = new Map<string, RecipientResult>();
  for (const r of reported) {
    exact.set(r.recipient, r);
    folded.set(r.recipient.toLowerCase(), r);
  }
  return recipients.map((recipient) =>
    resultOf(recipient, exact.get(recipient) ?? folded.get(recipient.toLowerCase())),
  );
}

function resultOf(recipient: string, r: RecipientResult | undefined): RecipientResult {
  if (!r) return { recipient, status: 'deferred', reply: replyRecord(NO_RESULT) };
  const status = r.status === 'delivered' || r.status === 'failed' ? r.status : 'deferred';
  return r.recipient === recipient && r.status === status ? r : { ...r, recipient, status };
}
