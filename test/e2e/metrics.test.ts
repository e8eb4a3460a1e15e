/**
 * The `metrics` plugin: a scripted SMTP conversation (plain and STARTTLS with
 * AUTH), delivery results and a queue, then a scrape over real HTTP; every
 * counter and histogram must have moved by exactly what the conversation did.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import Type from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import type { DeliveryJob } from '../../core/types.ts';
import { hashPassword } from '../../plugins/auth-users-file/scrypt-hash.ts';
import { recordResult } from '../../plugins/policy/policy.ts';
import type { QueueService, QueueStats } from '../../plugins/queue/types.ts';
import {
  CERT_SKIP_REASON,
  makeCertDir,
  makeCertificate,
  removeCertDir,
  startTls,
  type TestCertificate,
} from '../helpers/certs.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

declare module '../../plugins/policy/policy.ts' {
  interface PolicyChecks {
    'metrics-test': import('../../plugins/policy/policy.ts').CheckResult;
  }
}

/** Records a policy result on every transaction, fails on `boom@`, and serves a queue with fixed stats. */
const probe = definePlugin({
  name: 'probe',
  schema: Type.Object({}),
  register(api) {
    api.hooks.mail.tap((tx) => {
      recordResult(tx, 'metrics-test', { result: 'pass' });
      return undefined;
    });
    // Asynchronous (as a DNS or scanner check is): these calls are timed.
    api.hooks.rcpt.tap(async (_tx, to) => {
      if (to.address.localPart === 'boom') throw new Error('internal detail');
      return undefined;
    });
    const stats: QueueStats = {
      messages: 7,
      held: 1,
      quarantined: 2,
      deferred: 3,
      active: 1,
      recipients: { pending: 9 },
      bytes: 12345,
      oldestReceivedAt: 1_000_000 - 60_000,
      nextAttemptAt: undefined,
      destinations: [
        { destination: 'a.example', pending: 5 },
        { destination: 'b.example', pending: 3 },
        { destination: 'c.example', pending: 1 },
      ],
    };
    api.provide('queue', { stats: async () => stats } as unknown as QueueService);
  },
});

const PASSWORD = 'correct horse';
let dir = '';
let usersPath = '';
let cert: TestCertificate | undefined;

beforeAll(async () => {
  if (CERT_SKIP_REASON) throw new Error(`metrics test needs a certificate: ${CERT_SKIP_REASON}`);
  dir = await mkdtemp(join(tmpdir(), 'mailframe-metrics-'));
  usersPath = join(dir, 'users.json');
  await writeFile(
    usersPath,
    JSON.stringify({ users: { alice: await hashPassword(PASSWORD, { N: 1024, r: 8, p: 1 }) } }),
  );
  cert = await makeCertificate(await makeCertDir(), 'metrics', 'mx.test.example');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  if (cert) await removeCertDir(join(cert.certPath, '..'));
});

/** The exposition text as `series -> value`, e.g. `mailframe_connections_total{listener="smtp"}`. */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

async function scrape(port: number): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parse(await res.text());
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const clock = { now: () => 1_000_000 };

function job(destination: string, receivedAt: number): DeliveryJob {
  return {
    id: 'q1',
    destination,
    route: undefined,
    from: 'a@b.example',
    recipients: [{ address: `x@${destination}`, attributes: {} }],
    attributes: {},
    attempts: 1,
    receivedAt,
    stream: () => Readable.from([]),
    log: undefined as never,
  };
}

describe('metrics', () => {
  it('counts a scripted conversation, deliveries, the queue and policy results exactly', async () => {
    const t = await scope.start({
      clock,
      plugins: [
        ['tls', { cert: cert?.certPath, key: cert?.keyPath, watch: false, reloadOnSighup: false }],
        ['auth', {}],
        ['auth-users-file', { path: usersPath, watch: false }],
        probe,
        ['rcpt-local', { domains: ['example.com'] }],
        ['metrics', { port: 0, processMetrics: false, maxDestinations: 2 }],
      ],
    });
    const port = t.server.registry.service('metrics')?.address()?.port ?? 0;
    const before = await scrape(port);
    const moved = (after: Map<string, number>, series: string) =>
      (after.get(series) ?? 0) - (before.get(series) ?? 0);

    // A plain session: one message queued, one recipient lost to a failing tap.
    const body = 'Subject: metrics\r\n\r\nhello\r\n';
    const a = await t.connect();
    await a.expect('EHLO client.example', 250);
    await a.expect('MAIL FROM:<a@b.example>', 250);
    await a.expect('RCPT TO:<ok@example.com>', 250);
    await a.expect('RCPT TO:<boom@example.com>', 451, '4.3.0');
    await a.expect('DATA', 354);
    expect((await a.sendData(body)).code).toBe(250);
    await a.expect('QUIT', 221);
    await a.waitClosed();

    // A TLS session: AUTH fails once, then succeeds; a transaction reset.
    const plainSide = await t.connect();
    const { client: b } = await startTls(plainSide, 'mx.test.example');
    await b.expect('EHLO client.example', 250);
    await b.expect(`AUTH PLAIN ${b64(`\0alice\0wrong`)}`, 535, '5.7.8');
    await b.expect(`AUTH PLAIN ${b64(`\0alice\0${PASSWORD}`)}`, 235, '2.7.0');
    await b.expect('MAIL FROM:<a@b.example>', 250);
    await b.expect('RSET', 250);
    await b.expect('QUIT', 221);
    await b.waitClosed();
    while (t.server.connections > 0) await new Promise((r) => setImmediate(r));

    // The outbound side: three destinations, the third past maxDestinations.
    const out = t.server.outbound;
    const result = (status: 'delivered' | 'deferred' | 'failed') => ({ recipient: 'x', status }) as const;
    await out.delivered(job('a.example', clock.now() - 3_000), result('delivered'));
    await out.deferred(job('a.example', clock.now() - 3_000), result('deferred'));
    await out.bounced(job('b.example', clock.now() - 100_000), result('failed'));
    await out.delivered(job('c.example', clock.now() - 3_000), result('delivered'));

    const after = await scrape(port);
    const l = 'listener="smtp"';
    expect(moved(after, `mailframe_connections_total{${l}}`)).toBe(2);
    expect(after.get(`mailframe_connections_open{${l}}`)).toBe(0);
    expect(moved(after, `mailframe_transactions_total{${l},outcome="queued"}`)).toBe(1);
    expect(moved(after, `mailframe_transactions_total{${l},outcome="rset"}`)).toBe(1);
    expect(moved(after, `mailframe_messages_received_total{${l}}`)).toBe(1);
    expect(moved(after, `mailframe_received_bytes_total{${l}}`)).toBe(Buffer.byteLength(body));
    // Greetings (no enhanced code) and the 220 to STARTTLS (2.0.0) are told apart.
    expect(moved(after, 'mailframe_replies_total{class="2xx",code="220",enhanced=""}')).toBe(2);
    expect(moved(after, 'mailframe_replies_total{class="2xx",code="220",enhanced="2.0.0"}')).toBe(1);
    expect(moved(after, 'mailframe_replies_total{class="4xx",code="451",enhanced="4.3.0"}')).toBe(1);
    expect(moved(after, 'mailframe_replies_total{class="5xx",code="535",enhanced="5.7.8"}')).toBe(1);
    expect(moved(after, 'mailframe_replies_total{class="2xx",code="235",enhanced="2.7.0"}')).toBe(1);
    expect(moved(after, 'mailframe_replies_total{class="3xx",code="354",enhanced=""}')).toBe(1);
    expect(moved(after, 'mailframe_replies_total{class="2xx",code="221",enhanced="2.0.0"}')).toBe(2);
    expect(moved(after, `mailframe_auth_attempts_total{${l},result="success"}`)).toBe(1);
    expect(moved(after, `mailframe_auth_attempts_total{${l},result="failure"}`)).toBe(1);
    const tls = [...after].filter(([k]) => k.startsWith('mailframe_tls_sessions_total{'));
    expect(tls).toHaveLength(1);
    expect(tls[0]?.[0]).toMatch(/version="TLSv1\.[23]",cipher="TLS_[A-Z0-9_]+"/);
    expect(tls[0]?.[1]).toBe(1);

    // Hooks: probe's rcpt tap ran twice (ok, boom: failed), rcpt-local's once (boom never reached it).
    const hook = (plugin: string, name: string) => `plugin="${plugin}",hook="${name}"`;
    expect(moved(after, `mailframe_hook_calls_total{${hook('probe', 'rcpt')}}`)).toBe(2);
    expect(moved(after, `mailframe_hook_failures_total{${hook('probe', 'rcpt')}}`)).toBe(1);
    expect(moved(after, `mailframe_hook_timeouts_total{${hook('probe', 'rcpt')}}`)).toBe(0);
    expect(moved(after, `mailframe_hook_calls_total{${hook('rcpt-local', 'rcpt')}}`)).toBe(1);
    expect(moved(after, `mailframe_hook_calls_total{${hook('probe', 'mail')}}`)).toBe(2);
    // Only asynchronous answers are timed: probe's rcpt tap (both calls), not the synchronous ones.
    expect(after.get(`mailframe_hook_duration_seconds_count{${hook('probe', 'rcpt')}}`)).toBe(2);
    expect(after.get(`mailframe_hook_duration_seconds_bucket{${hook('probe', 'rcpt')},le="+Inf"}`)).toBe(2);
    expect(after.get(`mailframe_hook_duration_seconds_sum{${hook('probe', 'rcpt')}}`)).toBeGreaterThanOrEqual(
      0,
    );
    expect(after.has(`mailframe_hook_duration_seconds_count{${hook('rcpt-local', 'rcpt')}}`)).toBe(false);
    expect(after.has(`mailframe_hook_duration_seconds_count{${hook('probe', 'mail')}}`)).toBe(false);

    // Policy: the check's result on both transactions, counted as each ended.
    expect(moved(after, 'mailframe_policy_results_total{check="metrics-test",result="pass"}')).toBe(2);

    // Deliveries: c.example is past maxDestinations (2) and counts as "other".
    expect(after.get('mailframe_deliveries_total{destination="a.example",outcome="delivered"}')).toBe(1);
    expect(after.get('mailframe_deliveries_total{destination="a.example",outcome="deferred"}')).toBe(1);
    expect(after.get('mailframe_deliveries_total{destination="b.example",outcome="bounced"}')).toBe(1);
    expect(after.get('mailframe_deliveries_total{destination="other",outcome="delivered"}')).toBe(1);
    const delay = 'destination="a.example",outcome="delivered"';
    expect(after.get(`mailframe_delivery_delay_seconds_bucket{${delay},le="1"}`)).toBe(0);
    expect(after.get(`mailframe_delivery_delay_seconds_bucket{${delay},le="5"}`)).toBe(1);
    expect(after.get(`mailframe_delivery_delay_seconds_sum{${delay}}`)).toBe(3);
    expect(after.get('mailframe_delivery_delay_seconds_sum{destination="b.example",outcome="bounced"}')).toBe(
      100,
    );
    expect(
      after.get('mailframe_delivery_delay_seconds_bucket{destination="b.example",outcome="bounced",le="60"}'),
    ).toBe(0);
    expect(
      after.get(
        'mailframe_delivery_delay_seconds_bucket{destination="b.example",outcome="bounced",le="300"}',
      ),
    ).toBe(1);

    // The queue, read from the queue service's stats() at scrape time.
    expect(after.get('mailframe_queue_messages{state="all"}')).toBe(7);
    expect(after.get('mailframe_queue_messages{state="deferred"}')).toBe(3);
    expect(after.get('mailframe_queue_messages{state="held"}')).toBe(1);
    expect(after.get('mailframe_queue_messages{state="quarantined"}')).toBe(2);
    expect(after.get('mailframe_queue_active_jobs')).toBe(1);
    expect(after.get('mailframe_queue_recipients_pending')).toBe(9);
    expect(after.get('mailframe_queue_bytes')).toBe(12345);
    expect(after.get('mailframe_queue_oldest_message_age_seconds')).toBe(60);
    expect(after.get('mailframe_queue_destination_recipients_pending{destination="a.example"}')).toBe(5);
    expect(after.get('mailframe_queue_destination_recipients_pending{destination="c.example"}')).toBe(1);
  });

  it('answers 404 off its path and 405 to other methods, and keeps one registry per server', async () => {
    const plugins = [['metrics', { port: 0, processMetrics: false }] as const];
    const one = await scope.start({ plugins });
    const two = await scope.start({ plugins });
    const p1 = one.server.registry.service('metrics')?.address()?.port;
    const p2 = two.server.registry.service('metrics')?.address()?.port;
    expect((await fetch(`http://127.0.0.1:${p1}/other`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${p1}/metrics`, { method: 'POST' })).status).toBe(405);
    const c = await one.connect();
    await c.expect('QUIT', 221);
    await c.waitClosed();
    while (one.server.connections > 0) await new Promise((r) => setImmediate(r));
    expect((await scrape(p1 ?? 0)).get('mailframe_connections_total{listener="smtp"}')).toBe(1);
    expect((await scrape(p2 ?? 0)).has('mailframe_connections_total{listener="smtp"}')).toBe(false);
  });
});
