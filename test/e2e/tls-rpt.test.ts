/**
 * TLS reporting (RFC 8460) end to end: sessions are fed to the `tlsReport`
 * service of a running server (the delivery side that produces them is
 * another plugin's job), the injected clock moves past the day, and the
 * report goes where the domain's `_smtp._tls` record (served by the tests'
 * own DNS server) says: as mail through queue-fs into a Maildir, and as an
 * HTTPS POST to a server whose certificate comes from a test CA.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import pino from 'pino';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { MailServer } from '../../core/server.ts';
import { startTestDnsServer, type TestDnsServer, type TestDnsZone } from '../../core/testkit-dns.ts';
import type { EnvelopeAttributes } from '../../core/types.ts';
import { generateDkimKeyPair, txtStrings } from '../../plugins/dkim-sign/keys.ts';
import type { TlsSessionEvent } from '../../plugins/outbound/tls-report.ts';
import type { QueueService } from '../../plugins/queue/types.ts';
import type { TlsRptService } from '../../plugins/tls-rpt/index.ts';
import { ownVerify } from '../helpers/own-dkim.ts';
import { ensurePythonDkim, interop } from '../helpers/python-dkim.ts';
import { useScope } from '../helpers/scope.ts';
import { FakeClock, HOUR, MINUTE, parseMultipart, removeDir, tempDir } from './queue-harness.ts';
import { assertValidTlsReport } from './tlsrpt-schema.ts';

const run = promisify(execFile);
const scope = useScope();

const DAY1 = Date.parse('2026-03-02T10:00:00.000Z');
/** When day 1's reports are due with the default `reportHour` 1. */
const DAY1_DUE = Date.parse('2026-03-03T01:00:00.000Z');

async function dir(): Promise<string> {
  const d = await tempDir();
  scope.defer(() => removeDir(d));
  return d;
}

async function dnsServer(zone: TestDnsZone): Promise<TestDnsServer> {
  const dns = await startTestDnsServer(zone);
  scope.defer(() => dns.close());
  return dns;
}

interface RptServer {
  readonly server: MailServer;
  readonly rpt: TlsRptService;
  readonly queue: QueueService;
  readonly logs: Array<Record<string, unknown>>;
  readonly maildir: string;
  /** Envelope attributes of each delivered job, as delivery plugins see them. */
  readonly delivered: EnvelopeAttributes[];
  close(): Promise<void>;
}

/** A server with tls-rpt, deliver-maildir for `reports.example`, and queue-fs, on the fake clock. */
async function startRptServer(o: {
  dataDir: string;
  clock: FakeClock;
  dns: TestDnsServer;
  config?: Record<string, unknown>;
  /** More plugin entries (dkim-sign). */
  plugins?: Array<Record<string, unknown>>;
}): Promise<RptServer> {
  const logs: Array<Record<string, unknown>> = [];
  const delivered: EnvelopeAttributes[] = [];
  const maildir = join(o.dataDir, 'mail');
  const watch = definePlugin({
    name: 'test-delivered',
    schema: Type.Object({}),
    register(api) {
      api.hooks.delivered.tap((job) => void delivered.push(job.attributes));
    },
  });
  const server = await MailServer.create({
    config: {
      hostname: 'mx.test.example',
      dataDir: o.dataDir,
      listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
      timeouts: { command: 5000, data: 5000, hook: 5000, shutdownGrace: 200 },
      dns: { servers: [o.dns.address], timeout: 500, attempts: 1 },
      plugins: [
        { plugin: 'tls-rpt', config: { flushInterval: '1h', ...o.config } },
        {
          plugin: 'deliver-maildir',
          config: { root: maildir, domains: ['reports.example'], lineEndings: 'crlf', fsync: false },
        },
        { plugin: 'queue-fs', config: { fsync: false } },
        { plugin: 'test-delivered' },
        ...(o.plugins ?? []),
      ],
    },
    definitions: new Map([[watch.name, watch]]),
    clock: o.clock,
    logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) }),
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await server.close(200);
  };
  scope.defer(close);
  await server.listen();
  const rpt = server.registry.service('tlsRpt');
  const queue = server.registry.service('queue');
  if (!rpt || !queue) throw new Error('tls-rpt or queue did not start');
  return { server, rpt, queue, logs, maildir, delivered, close };
}

const STS = {
  policyDomain: 'example.net',
  policyType: 'sts',
  policyStrings: ['version: STSv1', 'mode: enforce', 'mx: mx1.example.net', 'max_age: 86400'],
  mxHosts: ['mx1.example.net'],
} as const;

const TLSA = {
  policyDomain: 'example.net',
  policyType: 'tlsa',
  policyStrings: ['3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'],
  mxHosts: [],
} as const;

function event(
  base: typeof STS | typeof TLSA,
  at: number,
  extra: Partial<TlsSessionEvent> = {},
): TlsSessionEvent {
  return { ...base, result: 'success', at, ...extra };
}

/** Messages delivered to `local@reports.example`, as text. */
async function mailbox(root: string, local = 'tlsrpt'): Promise<string[]> {
  const newDir = join(root, 'reports.example', local, 'Maildir', 'new');
  let names: string[];
  try {
    names = (await readdir(newDir)).sort();
  } catch {
    return [];
  }
  return Promise.all(names.map((n) => readFile(join(newDir, n), 'utf8')));
}

function header(headers: string, name: string): string | undefined {
  const unfolded = headers.replace(/\r\n[ \t]+/g, ' ');
  const m = new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(unfolded);
  return m?.[1];
}

interface MailedReport {
  readonly headers: string;
  readonly attachmentHeaders: string;
  readonly json: Record<string, unknown>;
}

/** Take a report message apart: RFC 8460 5.3 shape, the attachment gunzip'd and parsed. */
function readReportMail(message: string): MailedReport {
  const { headers, parts } = parseMultipart(message);
  expect(header(headers, 'Content-Type')).toMatch(/^multipart\/report;\s*report-type="?tlsrpt"?;/);
  expect(parts).toHaveLength(2);
  const [text, attachment] = parts as [(typeof parts)[0], (typeof parts)[0]];
  expect(header(text.headers, 'Content-Type')).toMatch(/^text\/plain/);
  expect(header(attachment.headers, 'Content-Type')).toMatch(/^application\/tlsrpt\+gzip/);
  expect(header(attachment.headers, 'Content-Transfer-Encoding')).toBe('base64');
  const gz = Buffer.from(attachment.body.replace(/\s+/g, ''), 'base64');
  const json = JSON.parse(gunzipSync(gz).toString('utf8')) as Record<string, unknown>;
  return { headers, attachmentHeaders: attachment.headers, json };
}

interface Post {
  readonly method: string;
  readonly contentType: string | undefined;
  readonly body: Buffer;
}

interface HttpsSink {
  readonly url: string;
  readonly posts: Post[];
  readonly caPath: string;
  /** HTTP status to answer each request with (default 200). */
  status: () => number;
  /** Leave requests unanswered (the connection stays open). */
  hold: boolean;
  /** Answer 200 at once, then one octet of body every 100 ms for this long before ending it (0: off). */
  trickleMs: number;
  waitForPosts(n: number): Promise<void>;
}

/** A test CA and a certificate it issued for 127.0.0.1, made with openssl into `where`. */
async function makeCa(where: string): Promise<{ caPath: string; key: Buffer; cert: Buffer }> {
  const p = (n: string) => join(where, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('/usr/bin/openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.pem'),
    '-days',
    '1',
    '-subj',
    '/CN=mailframe tls-rpt test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await run('/usr/bin/openssl', [
    'req',
    ...ec,
    '-keyout',
    p('leaf.key'),
    '-out',
    p('leaf.csr'),
    '-subj',
    '/CN=127.0.0.1',
  ]);
  await writeFile(p('leaf.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await run('/usr/bin/openssl', [
    'x509',
    '-req',
    '-in',
    p('leaf.csr'),
    '-CA',
    p('ca.pem'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-out',
    p('leaf.pem'),
    '-days',
    '1',
    '-extfile',
    p('leaf.ext'),
  ]);
  return { caPath: p('ca.pem'), key: await readFile(p('leaf.key')), cert: await readFile(p('leaf.pem')) };
}

/** An HTTPS server (certificate from a test CA) that records every request. */
async function startHttpsSink(): Promise<HttpsSink> {
  const where = await dir();
  const { caPath, key, cert } = await makeCa(where);
  const posts: Post[] = [];
  let waiters: Array<() => void> = [];
  const sink = {
    url: '',
    posts,
    caPath,
    status: () => 200,
    hold: false,
    trickleMs: 0,
    async waitForPosts(n: number) {
      const deadline = Date.now() + 10_000;
      while (posts.length < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} POSTs, have ${posts.length}`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 1000);
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    },
  };
  const server: Server = createServer({ key, cert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts.push({
        method: req.method ?? '',
        contentType: req.headers['content-type'],
        body: Buffer.concat(chunks),
      });
      if (sink.trickleMs > 0) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        const drip = setInterval(() => res.write('.'), 100);
        const stop = setTimeout(() => res.end(), sink.trickleMs);
        res.on('close', () => {
          clearInterval(drip);
          clearTimeout(stop);
        });
      } else if (!sink.hold) {
        res.statusCode = sink.status();
        res.end();
      }
      const w = waiters;
      waiters = [];
      for (const fn of w) fn();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  scope.defer(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  sink.url = `https://127.0.0.1:${port}/tlsrpt`;
  return sink;
}

/** An HTTPS sink as example.net's only `rua`, and a tls-rpt server trusting its CA (`config` added). */
async function startWithHttpsRua(clock: FakeClock, config: Record<string, unknown> = {}) {
  const sink = await startHttpsSink();
  const dns = await dnsServer({ '_smtp._tls.example.net': { TXT: [`v=TLSRPTv1; rua=${sink.url}`] } });
  const t = await startRptServer({
    dataDir: await dir(),
    clock,
    dns,
    config: { caFile: sink.caPath, ...config },
  });
  return { sink, t };
}

function postedReport(post: Post): Record<string, unknown> {
  return JSON.parse(gunzipSync(post.body).toString('utf8')) as Record<string, unknown>;
}

type Policy = {
  policy: Record<string, unknown>;
  summary: Record<string, number>;
  'failure-details'?: Array<Record<string, unknown>>;
};

function policyOf(report: Record<string, unknown>, type: string): Policy {
  const p = (report['policies'] as Policy[]).find((x) => x.policy['policy-type'] === type);
  if (!p) throw new Error(`no ${type} policy in ${JSON.stringify(report)}`);
  return p;
}

describe('tls-rpt', () => {
  it('sends a finished day as RFC 8460 mail that arrives in a mailbox and validates against the report schema', async () => {
    const clock = new FakeClock(DAY1);
    const dns = await dnsServer({
      '_smtp._tls.example.net': { TXT: ['v=TLSRPTv1; rua=mailto:tlsrpt@reports.example'] },
    });
    const t = await startRptServer({ dataDir: await dir(), clock, dns });
    for (let i = 0; i < 3; i++) t.rpt.record(event(STS, clock.now() + i * MINUTE));
    const expired = {
      result: 'certificate-expired',
      sendingMtaIp: '192.0.2.10',
      receivingMxHostname: 'mx1.example.net',
      receivingMxHelo: 'mx1.example.net',
      receivingIp: '203.0.113.25',
      failureReasonCode: 'X509_V_ERR_CERT_HAS_EXPIRED',
    } as const;
    t.rpt.record(event(STS, clock.now(), expired));
    t.rpt.record(event(STS, clock.now() + HOUR, expired));
    t.rpt.record(event(STS, clock.now(), { result: 'starttls-not-supported', receivingIp: '203.0.113.26' }));
    t.rpt.record(event(TLSA, clock.now()));
    // The next day's sessions belong to the next report.
    t.rpt.record(event(STS, Date.parse('2026-03-03T00:10:00Z')));

    clock.t = Date.parse('2026-03-03T00:59:00Z');
    await t.rpt.runDue();
    expect(t.rpt.reports()).toEqual([]);

    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    await t.queue.runDue();
    const mail = await mailbox(t.maildir);
    expect(mail).toHaveLength(1);
    // Marked for delivery plugins: a report goes out despite TLS failures (RFC 8460 5.3).
    expect(t.delivered).toEqual([{ tlsReport: true }]);
    const { headers, attachmentHeaders, json } = readReportMail(mail[0] as string);
    assertValidTlsReport(json);

    const reportId = json['report-id'] as string;
    expect(header(headers, 'Subject')).toBe(
      `Report Domain: example.net Submitter: mx.test.example Report-ID: <${reportId}>`,
    );
    expect(reportId).toMatch(/^[^\s<>@]+@mx\.test\.example$/);
    expect(header(headers, 'TLS-Report-Domain')).toBe('example.net');
    expect(header(headers, 'TLS-Report-Submitter')).toBe('mx.test.example');
    expect(header(headers, 'TLS-Required')).toBe('No');
    expect(header(headers, 'From')).toBe('<noreply-tlsrpt@mx.test.example>');
    expect(header(headers, 'To')).toBe('<tlsrpt@reports.example>');
    const begin = Date.parse('2026-03-02T00:00:00Z') / 1000;
    const filename = /filename="([^"]+)"/.exec(attachmentHeaders.replace(/\r\n[ \t]+/g, ' '))?.[1];
    expect(filename).toMatch(
      new RegExp(`^mx\\.test\\.example!example\\.net!${begin}!${begin + 86399}![A-Za-z0-9]+\\.json\\.gz$`),
    );

    expect(json['organization-name']).toBe('mx.test.example');
    expect(json['contact-info']).toBe('noreply-tlsrpt@mx.test.example');
    expect(json['date-range']).toEqual({
      'start-datetime': '2026-03-02T00:00:00Z',
      'end-datetime': '2026-03-02T23:59:59Z',
    });
    expect(json['policies']).toHaveLength(2);
    const sts = policyOf(json, 'sts');
    expect(sts.policy).toEqual({
      'policy-type': 'sts',
      'policy-string': [...STS.policyStrings],
      'policy-domain': 'example.net',
      'mx-host': ['mx1.example.net'],
    });
    expect(sts.summary).toEqual({ 'total-successful-session-count': 3, 'total-failure-session-count': 3 });
    expect(sts['failure-details']).toHaveLength(2);
    expect(sts['failure-details']).toContainEqual({
      'result-type': 'certificate-expired',
      'sending-mta-ip': '192.0.2.10',
      'receiving-mx-hostname': 'mx1.example.net',
      'receiving-mx-helo': 'mx1.example.net',
      'receiving-ip': '203.0.113.25',
      'failed-session-count': 2,
      'failure-reason-code': 'X509_V_ERR_CERT_HAS_EXPIRED',
    });
    expect(sts['failure-details']).toContainEqual({
      'result-type': 'starttls-not-supported',
      'receiving-ip': '203.0.113.26',
      'failed-session-count': 1,
    });
    const tlsa = policyOf(json, 'tlsa');
    expect(tlsa.policy).toEqual({
      'policy-type': 'tlsa',
      'policy-string': [...TLSA.policyStrings],
      'policy-domain': 'example.net',
    });
    expect(tlsa.summary).toEqual({ 'total-successful-session-count': 1, 'total-failure-session-count': 0 });
    expect(t.rpt.reports().map((r) => [r.day, r.domain, r.state])).toEqual([
      ['2026-03-02', 'example.net', 'sent'],
    ]);
  });

  it('POSTs the gzip’d report to an https rua, and sends to every rua URI', async () => {
    const clock = new FakeClock(DAY1);
    const sink = await startHttpsSink();
    const dns = await dnsServer({
      '_smtp._tls.example.net': {
        TXT: ['v=spf1 -all', `v=TLSRPTv1;rua=mailto:tlsrpt@reports.example, ${sink.url};`],
      },
    });
    const t = await startRptServer({ dataDir: await dir(), clock, dns, config: { caFile: sink.caPath } });
    t.rpt.record(event(STS, clock.now()));
    t.rpt.record(
      event(STS, clock.now(), { result: 'sts-webpki-invalid', receivingMxHostname: 'MX1.example.net' }),
    );
    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    await t.queue.runDue();

    expect(sink.posts).toHaveLength(1);
    const post = sink.posts[0] as Post;
    expect(post.method).toBe('POST');
    expect(post.contentType).toBe('application/tlsrpt+gzip');
    const posted = postedReport(post);
    assertValidTlsReport(posted);
    expect(policyOf(posted, 'sts').summary).toEqual({
      'total-successful-session-count': 1,
      'total-failure-session-count': 1,
    });
    expect(policyOf(posted, 'sts')['failure-details']).toEqual([
      {
        'result-type': 'sts-webpki-invalid',
        'receiving-mx-hostname': 'mx1.example.net',
        'failed-session-count': 1,
      },
    ]);

    const mail = await mailbox(t.maildir);
    expect(mail).toHaveLength(1);
    const mailed = readReportMail(mail[0] as string).json;
    // One report, sent to each endpoint.
    expect(mailed).toEqual(posted);
  });

  it('keeps counters across a restart: the report counts sessions from before and after', async () => {
    const clock = new FakeClock(DAY1);
    const sink = await startHttpsSink();
    const dns = await dnsServer({ '_smtp._tls.example.net': { TXT: [`v=TLSRPTv1; rua=${sink.url}`] } });
    const dataDir = await dir();
    const first = await startRptServer({ dataDir, clock, dns, config: { caFile: sink.caPath } });
    first.rpt.record(event(STS, clock.now()));
    first.rpt.record(event(STS, clock.now(), { result: 'validation-failure', receivingIp: '203.0.113.7' }));
    // Closing flushes what was recorded since the last flush (the interval is an hour here).
    await first.close();

    const second = await startRptServer({ dataDir, clock, dns, config: { caFile: sink.caPath } });
    second.rpt.record(event(STS, clock.now() + HOUR));
    second.rpt.record(event(STS, clock.now(), { result: 'validation-failure', receivingIp: '203.0.113.7' }));
    clock.t = DAY1_DUE;
    await second.rpt.runDue();

    expect(sink.posts).toHaveLength(1);
    const posted = postedReport(sink.posts[0] as Post);
    assertValidTlsReport(posted);
    const sts = policyOf(posted, 'sts');
    expect(sts.summary).toEqual({ 'total-successful-session-count': 2, 'total-failure-session-count': 2 });
    expect(sts['failure-details']).toEqual([
      { 'result-type': 'validation-failure', 'receiving-ip': '203.0.113.7', 'failed-session-count': 2 },
    ]);

    // What was sent is remembered across a restart too: nothing goes out again.
    await second.close();
    const third = await startRptServer({ dataDir, clock, dns, config: { caFile: sink.caPath } });
    clock.advance(24 * HOUR);
    await third.rpt.runDue();
    expect(sink.posts).toHaveLength(1);
    expect(third.rpt.reports()).toMatchObject([{ day: '2026-03-02', domain: 'example.net', state: 'sent' }]);
  });

  it('sends no report to a domain without a _smtp._tls record (logged), nor for a malformed one', async () => {
    const clock = new FakeClock(DAY1);
    const dns = await dnsServer({
      'example.net': { TXT: ['v=spf1 -all'] },
      // Two TLSRPT records: RFC 8460 section 3 says the domain takes no reports.
      '_smtp._tls.example.org': {
        TXT: [
          'v=TLSRPTv1; rua=mailto:tlsrpt@reports.example',
          'v=TLSRPTv1; rua=mailto:other@reports.example',
        ],
      },
    });
    const t = await startRptServer({ dataDir: await dir(), clock, dns });
    t.rpt.record(event(STS, clock.now()));
    t.rpt.record({ ...event(STS, clock.now()), policyDomain: 'example.org' });
    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    await t.queue.runDue();

    expect(await mailbox(t.maildir)).toEqual([]);
    expect(await mailbox(t.maildir, 'other')).toEqual([]);
    expect(
      t.rpt
        .reports()
        .map((r) => [r.domain, r.state])
        .sort(),
    ).toEqual([
      ['example.net', 'skipped'],
      ['example.org', 'skipped'],
    ]);
    const lines = t.logs.filter((l) => String(l['msg']).startsWith('no TLS reporting policy at _smtp._tls.'));
    expect(lines.map((l) => [l['domain'], l['why']]).sort()).toEqual([
      ['example.net', 'nxdomain'],
      ['example.org', '2 v=TLSRPTv1 records'],
    ]);
    expect((await t.queue.stats()).messages).toBe(0);
  });

  it('sends a report once: a failed POST is retried later, then nothing more, late sessions included', async () => {
    const clock = new FakeClock(DAY1);
    const { sink, t } = await startWithHttpsRua(clock);
    t.rpt.record(event(STS, clock.now()));
    clock.t = DAY1_DUE;
    sink.status = () => 503;
    await t.rpt.runDue();
    expect(sink.posts).toHaveLength(1);
    expect(t.rpt.reports()[0]).toMatchObject({
      state: 'pending',
      attempts: 1,
      nextAttemptAt: DAY1_DUE + HOUR,
    });

    // Not due again yet.
    clock.advance(30 * MINUTE);
    await t.rpt.runDue();
    expect(sink.posts).toHaveLength(1);

    sink.status = () => 200;
    clock.advance(30 * MINUTE);
    await t.rpt.runDue();
    expect(sink.posts).toHaveLength(2);
    expect(postedReport(sink.posts[1] as Post)).toEqual(postedReport(sink.posts[0] as Post));
    expect(t.rpt.reports()[0]).toMatchObject({ state: 'sent', attempts: 2 });

    // A session for the reported day that arrives late is not reported again.
    t.rpt.record(event(STS, DAY1));
    clock.advance(2 * 24 * HOUR);
    await t.rpt.runDue();
    expect(sink.posts).toHaveLength(2);
    expect(t.logs.some((l) => l['msg'] === 'sessions for a day already reported were not counted')).toBe(
      true,
    );
  });

  it('drops a report after the configured retries, with a log line', async () => {
    const clock = new FakeClock(DAY1);
    const { sink, t } = await startWithHttpsRua(clock, { retries: 2, retryDelay: '10m' });
    sink.status = () => 500;
    t.rpt.record(event(STS, clock.now()));
    clock.t = DAY1_DUE;
    for (let i = 0; i < 6; i++) {
      await t.rpt.runDue();
      clock.advance(HOUR);
    }
    expect(sink.posts).toHaveLength(3);
    expect(t.rpt.reports()[0]).toMatchObject({ state: 'dropped', attempts: 3 });
    const dropped = t.logs.filter((l) => l['msg'] === 'TLS report dropped after its last attempt');
    expect(dropped).toHaveLength(1);
    expect(String(dropped[0]?.['why'])).toContain('HTTP 500');
  });

  it('keeps at most maxFailureGroups failure groups per domain and day; the rest count without details', async () => {
    const clock = new FakeClock(DAY1);
    const { sink, t } = await startWithHttpsRua(clock, { maxFailureGroups: 2 });
    const fail = (ip: string, result: TlsSessionEvent['result'] = 'certificate-not-trusted') =>
      t.rpt.record(event(STS, clock.now(), { result, receivingIp: ip }));
    fail('203.0.113.1');
    fail('203.0.113.2');
    fail('203.0.113.3');
    // The cap holds across flushes too (what is on disk counts).
    t.rpt.flush();
    fail('203.0.113.1');
    fail('203.0.113.4');
    fail('203.0.113.5', 'starttls-not-supported');
    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    const posted = postedReport(sink.posts[0] as Post);
    assertValidTlsReport(posted);
    const sts = policyOf(posted, 'sts');
    expect(sts.summary['total-failure-session-count']).toBe(6);
    const details = sts['failure-details'] ?? [];
    expect(details).toHaveLength(4);
    expect(details).toContainEqual({
      'result-type': 'certificate-not-trusted',
      'receiving-ip': '203.0.113.1',
      'failed-session-count': 2,
    });
    expect(details).toContainEqual({
      'result-type': 'certificate-not-trusted',
      'receiving-ip': '203.0.113.2',
      'failed-session-count': 1,
    });
    expect(details).toContainEqual({ 'result-type': 'certificate-not-trusted', 'failed-session-count': 2 });
    expect(details).toContainEqual({ 'result-type': 'starttls-not-supported', 'failed-session-count': 1 });
  });

  it('its own timer sends the report once the server clock passes the report hour', async () => {
    const clock = new FakeClock(DAY1);
    const { sink, t } = await startWithHttpsRua(clock, { flushInterval: '50ms', reportHour: 6 });
    t.rpt.record(event(STS, clock.now()));
    clock.t = Date.parse('2026-03-03T06:00:00Z');
    await sink.waitForPosts(1);
    assertValidTlsReport(postedReport(sink.posts[0] as Post));
    await t.close();
    expect(sink.posts).toHaveLength(1);
  });
});

describe('tls-rpt report mail DKIM (RFC 8460 5.3)', () => {
  async function sendReport(dkim: boolean) {
    const clock = new FakeClock(DAY1);
    const dataDir = await dir();
    const [rsa, ed] = await Promise.all([generateDkimKeyPair('rsa'), generateDkimKeyPair('ed25519')]);
    await writeFile(join(dataDir, 'rsa.pem'), rsa.privateKeyPem);
    await writeFile(join(dataDir, 'ed.pem'), ed.privateKeyPem);
    const dns = await dnsServer({
      '_smtp._tls.example.net': { TXT: ['v=TLSRPTv1; rua=mailto:tlsrpt@reports.example'] },
      'r1._domainkey.mx.test.example': { TXT: [txtStrings(rsa.record)] },
      'e1._domainkey.mx.test.example': { TXT: [txtStrings(ed.record)] },
    });
    const signing = {
      plugin: 'dkim-sign',
      config: {
        domains: [
          {
            domain: 'mx.test.example',
            selectors: [
              { selector: 'r1', keyFile: join(dataDir, 'rsa.pem') },
              { selector: 'e1', keyFile: join(dataDir, 'ed.pem') },
            ],
          },
        ],
      },
    };
    const t = await startRptServer({ dataDir, clock, dns, plugins: dkim ? [signing] : [] });
    t.rpt.record(event(STS, clock.now()));
    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    await t.queue.runDue();
    const mail = await mailbox(t.maildir);
    expect(mail).toHaveLength(1);
    return { t, dns, clock, rsa, ed, mail: Buffer.from(mail[0] as string, 'utf8') };
  }

  it('signs the report mail with dkim-sign: our verifier and python3-dkim accept it', async () => {
    await ensurePythonDkim();
    const { t, dns, clock, rsa, ed, mail } = await sendReport(true);
    expect(t.logs.some((l) => String(l.msg).includes('unsigned'))).toBe(false);
    const own = await ownVerify(mail, dns, clock);
    expect(own.signatures.map((v) => [v.domain, v.selector, v.result])).toEqual([
      ['mx.test.example', 'r1', 'pass'],
      ['mx.test.example', 'e1', 'pass'],
    ]);
    const records = {
      'r1._domainkey.mx.test.example': rsa.record,
      'e1._domainkey.mx.test.example': ed.record,
    };
    const py = await interop(['verify', JSON.stringify(records)], mail);
    expect(py.stdout).toContain('ok=True');
    expect(py.code).toBe(0);
  }, 60_000);

  it('without dkim-sign the report still goes out, unsigned, and the start says so once', async () => {
    const { t, mail } = await sendReport(false);
    expect(mail.toString('latin1')).not.toContain('DKIM-Signature');
    expect(t.logs.filter((l) => String(l.msg).includes('TLS reports will go out unsigned'))).toHaveLength(1);
  });
});

describe('tls-rpt config', () => {
  it('reads caFile relative to the data directory', async () => {
    const dataDir = await dir();
    await mkdir(join(dataDir, 'ca'), { recursive: true });
    const clock = new FakeClock(DAY1);
    const sink = await startHttpsSink();
    await writeFile(join(dataDir, 'ca', 'extra.pem'), await readFile(sink.caPath));
    const dns = await dnsServer({ '_smtp._tls.example.net': { TXT: [`v=TLSRPTv1; rua=${sink.url}`] } });
    const t = await startRptServer({ dataDir, clock, dns, config: { caFile: 'ca/extra.pem' } });
    t.rpt.record(event(STS, clock.now()));
    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    expect(sink.posts).toHaveLength(1);
  });
});

describe('tls-rpt robustness', () => {
  it('takes any event without throwing; unusable ones are not counted, IDN domains count as A-labels', async () => {
    const clock = new FakeClock(DAY1);
    const sink = await startHttpsSink();
    const dns = await dnsServer({
      '_smtp._tls.xn--bcher-kva.example': { TXT: [`v=TLSRPTv1; rua=${sink.url}`] },
    });
    const t = await startRptServer({ dataDir: await dir(), clock, dns, config: { caFile: sink.caPath } });
    expect(() => t.rpt.record({ ...event(STS, Number.NaN) })).not.toThrow();
    expect(() => t.rpt.record({ ...event(STS, clock.now()), policyDomain: '' })).not.toThrow();
    expect(() => t.rpt.record({ ...event(STS, clock.now()), policyDomain: 'a b' })).not.toThrow();
    t.rpt.record({ ...event(STS, clock.now()), policyDomain: 'Bücher.example.' });
    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    expect(t.rpt.reports().map((r) => [r.domain, r.state])).toEqual([['xn--bcher-kva.example', 'sent']]);
    const posted = postedReport(sink.posts[0] as Post);
    assertValidTlsReport(posted);
    expect(policyOf(posted, 'sts').policy['policy-domain']).toBe('xn--bcher-kva.example');
  });

  it('stops a POST in flight when the server stops; the report stays due for after the restart', async () => {
    const clock = new FakeClock(DAY1);
    const sink = await startHttpsSink();
    sink.hold = true;
    const dns = await dnsServer({ '_smtp._tls.example.net': { TXT: [`v=TLSRPTv1; rua=${sink.url}`] } });
    const dataDir = await dir();
    const config = { caFile: sink.caPath, httpsTimeout: '1h' };
    const first = await startRptServer({ dataDir, clock, dns, config });
    first.rpt.record(event(STS, clock.now()));
    clock.t = DAY1_DUE;
    const pass = first.rpt.runDue();
    await sink.waitForPosts(1);
    // Without the abort, closing would wait for the hour-long POST timeout (and the test time out).
    await first.close();
    await pass;

    sink.hold = false;
    const second = await startRptServer({ dataDir, clock, dns, config });
    expect(second.rpt.reports()).toMatchObject([{ state: 'pending', attempts: 0 }]);
    await second.rpt.runDue();
    expect(sink.posts).toHaveLength(2);
    expect(second.rpt.reports()).toMatchObject([{ state: 'sent', attempts: 1 }]);
    expect(postedReport(sink.posts[1] as Post)).toEqual(postedReport(sink.posts[0] as Post));
  });
});

describe('tls-rpt https endpoint deadline', () => {
  it('gives up a POST whose answer trickles in past httpsTimeout: the whole exchange has one deadline', async () => {
    const clock = new FakeClock(DAY1);
    const { sink, t } = await startWithHttpsRua(clock, { httpsTimeout: '1s' });
    // A body octet every 100 ms keeps the socket busy: an idle timeout alone would wait the 8 s out.
    sink.trickleMs = 8000;
    t.rpt.record(event(STS, clock.now()));
    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    expect(sink.posts).toHaveLength(1);
    expect(t.rpt.reports()[0]).toMatchObject({ state: 'pending', attempts: 1 });
    const retry = t.logs.find((l) => l['msg'] === 'TLS report not sent; will retry');
    expect(String(retry?.['why'])).toContain('no answer within 1000 ms');
  });
});

describe('tls-rpt https endpoint trust', () => {
  it('does not POST to a server whose certificate no trusted CA issued; the report waits for a retry', async () => {
    const clock = new FakeClock(DAY1);
    const sink = await startHttpsSink();
    const dns = await dnsServer({ '_smtp._tls.example.net': { TXT: [`v=TLSRPTv1; rua=${sink.url}`] } });
    const t = await startRptServer({ dataDir: await dir(), clock, dns });
    t.rpt.record(event(STS, clock.now()));
    clock.t = DAY1_DUE;
    await t.rpt.runDue();
    expect(sink.posts).toHaveLength(0);
    expect(t.rpt.reports()[0]).toMatchObject({ state: 'pending', attempts: 1 });
    const retry = t.logs.find((l) => l['msg'] === 'TLS report not sent; will retry');
    expect(String(retry?.['why'])).toMatch(/certificate/i);
  });
});

describe('tls-rpt under SIGKILL', () => {
  it('keeps every flushed counter; only the sessions since the last flush are lost', async () => {
    const dataDir = await dir();
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, 'tls-rpt-crash-child.ts'), dataDir, String(DAY1), '5', '3'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) =>
      child.on('exit', (code, signal) => resolve(signal ?? code)),
    );
    // Killed after the test whatever happens to it (a no-op once the test killed it).
    scope.defer(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('ready\n')) resolve();
      });
      child.on('exit', () => reject(new Error(`child exited before it was ready: ${stderr}`)));
    });
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');

    const clock = new FakeClock(DAY1_DUE);
    const sink = await startHttpsSink();
    const dns = await dnsServer({ '_smtp._tls.example.net': { TXT: [`v=TLSRPTv1; rua=${sink.url}`] } });
    const t = await startRptServer({ dataDir, clock, dns, config: { caFile: sink.caPath } });
    await t.rpt.runDue();
    const posted = postedReport(sink.posts[0] as Post);
    assertValidTlsReport(posted);
    expect(policyOf(posted, 'no-policy-found')).toEqual({
      policy: { 'policy-type': 'no-policy-found', 'policy-domain': 'example.net' },
      summary: { 'total-successful-session-count': 5, 'total-failure-session-count': 0 },
    });
  });
});
