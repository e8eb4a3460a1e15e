/**
 * Every metric the `metrics` plugin exposes: name, type, labels and help. The
 * plugin builds its series from this list, and `npm run docs` writes the table
 * in docs/operations.md ("Metrics") from it, so the two cannot drift.
 */

export interface MetricSpec {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly labels: readonly string[];
  readonly help: string;
}

function spec<const N extends string, const L extends readonly string[]>(
  name: N,
  type: MetricSpec['type'],
  labels: L,
  help: string,
): MetricSpec & { readonly name: N; readonly labels: L } {
  return { name, type, labels, help };
}

export const METRICS = {
  connectionsOpen: spec('mailframe_connections_open', 'gauge', ['listener'], 'SMTP sessions open now.'),
  connections: spec(
    'mailframe_connections_total',
    'counter',
    ['listener'],
    'SMTP sessions begun (connections the connection limits let in).',
  ),
  transactions: spec(
    'mailframe_transactions_total',
    'counter',
    ['listener', 'outcome'],
    'Mail transactions ended, by outcome: queued, rejected (after the message), rset (RSET, EHLO or STARTTLS), disconnect.',
  ),
  replies: spec(
    'mailframe_replies_total',
    'counter',
    ['class', 'code', 'enhanced'],
    'Replies sent, by class (2xx..5xx), code and enhanced status code (empty when none).',
  ),
  messages: spec(
    'mailframe_messages_received_total',
    'counter',
    ['listener'],
    'Messages queued (answered 250).',
  ),
  bytes: spec(
    'mailframe_received_bytes_total',
    'counter',
    ['listener'],
    'Octets of the messages queued, as received (after dot-unstuffing, without added header fields).',
  ),
  hookDuration: spec(
    'mailframe_hook_duration_seconds',
    'histogram',
    ['plugin', 'hook'],
    "How long one plugin's asynchronous taps on one hook took, from the promise returned to its settling (with `hookTimings`; synchronous answers are not timed).",
  ),
  hookCalls: spec(
    'mailframe_hook_calls_total',
    'counter',
    ['plugin', 'hook'],
    "Calls of one plugin's taps on one hook (`server.hookMetrics()`, read at scrape time).",
  ),
  hookFailures: spec(
    'mailframe_hook_failures_total',
    'counter',
    ['plugin', 'hook'],
    'Taps that threw or rejected (the core answered 451 4.3.0 or skipped the tap).',
  ),
  hookTimeouts: spec(
    'mailframe_hook_timeouts_total',
    'counter',
    ['plugin', 'hook'],
    "Taps that did not answer within the plugin's timeout.",
  ),
  hookFaults: spec(
    'mailframe_hook_faults_total',
    'counter',
    ['plugin', 'hook'],
    'Errors raised later by code a tap started (floating promises, timers), with `mailframe start`.',
  ),
  tls: spec(
    'mailframe_tls_sessions_total',
    'counter',
    ['listener', 'version', 'cipher'],
    'Sessions that went TLS (implicit or STARTTLS), by protocol version and cipher.',
  ),
  auth: spec(
    'mailframe_auth_attempts_total',
    'counter',
    ['listener', 'result'],
    'AUTH exchanges that ended: success (235) or failure (any 4xx/5xx answer to AUTH).',
  ),
  queueMessages: spec(
    'mailframe_queue_messages',
    'gauge',
    ['state'],
    'Messages in the queue at scrape time: all, deferred, held, quarantined.',
  ),
  queueActive: spec('mailframe_queue_active_jobs', 'gauge', [], 'Delivery jobs running at scrape time.'),
  queuePending: spec(
    'mailframe_queue_recipients_pending',
    'gauge',
    [],
    'Recipients still to be delivered, at scrape time.',
  ),
  queueBytes: spec('mailframe_queue_bytes', 'gauge', [], 'Octets of the queued messages, at scrape time.'),
  queueOldest: spec(
    'mailframe_queue_oldest_message_age_seconds',
    'gauge',
    [],
    'Age of the oldest queued message (0 when the queue is empty).',
  ),
  queueDestinations: spec(
    'mailframe_queue_destination_recipients_pending',
    'gauge',
    ['destination'],
    'Pending recipients of the destinations with the most (top `queueDestinations`), at scrape time.',
  ),
  deliveries: spec(
    'mailframe_deliveries_total',
    'counter',
    ['destination', 'outcome'],
    'Per-recipient delivery results: delivered, deferred, bounced.',
  ),
  deliveryDelay: spec(
    'mailframe_delivery_delay_seconds',
    'histogram',
    ['destination', 'outcome'],
    'From receipt to the final result of a recipient (delivered or bounced), when the queue knows the receipt time.',
  ),
  policy: spec(
    'mailframe_policy_results_total',
    'counter',
    ['check', 'result'],
    'Check results recorded on transactions (`mailframe/policy`), counted when the transaction ends.',
  ),
} as const;

/** The table of docs/operations.md, "Metrics" (written by `npm run docs`). */
export function metricsTable(): string {
  const rows = Object.values(METRICS).map(
    (m) => `| \`${m.name}\` | ${m.type} | ${m.labels.map((l) => `\`${l}\``).join(', ') || '-'} | ${m.help} |`,
  );
  return ['| metric | type | labels | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}
