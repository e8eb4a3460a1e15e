/**
 * deliver-mx against "remote" mail exchangers on 127.0.0.2, 127.0.0.3, ...
 * (smtp-server instances sharing one port that stands in for 25) and a DNS
 * zone of the test's own: MX order and fallback, implicit MX, null MX,
 * NXDOMAIN, DNS failures, loops, per-recipient results, bounces, connection
 * reuse, concurrency limits, back-off, TLS policies.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runQueueCli } from '../../bin/queue-cli.ts';
import { startTestServer } from '../../core/testkit.ts';
import type { TestDnsServer } from '../../core/testkit-dns.ts';
import type { QueueService } from '../../plugins/queue/types.ts';
import {
  type Certificate,
  deliverJob,
  deliveryJob,
  makeCertificate,
  type PeerOptions,
  smtpError,
} from './deliver-helpers.ts';
import {
  freePort,
  type MxServer,
  type Remote,
  startDns,
  startMxServer,
  startRemote,
  startSlammer,
  type Zone,
} from './mx-helpers.ts';

const SHORT = {
  connect: 2000,
  greeting: 2000,
  command: 2000,
  mail: 2000,
  rcpt: 2000,
  dataInit: 2000,
  dataFinal: 2000,
};
const MESSAGE = 'From: a@origin.example\r\nTo: b@dest.example\r\nSubject: mx\r\n\r\nhello\r\n';

let cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  const list = cleanups.reverse();
  cleanups = [];
  for (const fn of list) await fn();
});
let cert: Certificate;
beforeAll(async () => {
  cert = await makeCertificate();
});
afterAll(async () => {
  await rm(cert.dir, { recursive: true, force: true });
});

let port = 0;
async function remote(address: string, opts: PeerOptions = {}): Promise<Remote> {
  const r = await startRemote(address, port, { key: cert.key, cert: cert.cert, ...opts });
  cleanups.push(() => r.close());
  return r;
}
async function dns(zone: Zone): Promise<TestDnsServer> {
  const d = await startDns(zone);
  cleanups.push(() => d.close());
  return d;
}
async function mx(
  d: TestDnsServer,
  config: Record<string, unknown> = {},
  more: ReadonlyArray<{ plugin: string; config?: Record<string, unknown> }> = [],
  clock?: { now(): number },
): Promise<MxServer> {
  const s = await startMxServer(d, { port, timeouts: SHORT, ...config }, more, clock);
  cleanups.push(() => s.close());
  return s;
}

const deliver = deliverJob;

const job = (to: string[], extra: Partial<Parameters<typeof deliveryJob>[0]> = {}) =>
  deliveryJob({ to, message: MESSAGE, ...extra });

/** A zone where dest.example has two exchangers on 127.0.0.2 (preference 10) and 127.0.0.3 (20). */
const TWO_MX: Zone = {
  'dest.example': {
    MX: [
      { exchange: 'mx2.dest.example', preference: 20 },
      { exchange: 'mx1.dest.example', preference: 10 },
    ],
  },
  'mx1.dest.example': { A: ['127.0.0.2'] },
  'mx2.dest.example': { A: ['127.0.0.3'] },
};

beforeAll(async () => {
  port = await freePort();
});

describe('deliver-mx: routing (RFC 5321 5.1)', () => {
  it('delivers to the most preferred exchanger', async () => {
    const one = await remote('127.0.0.2');
    const two = await remote('127.0.0.3');
    const s = await mx(await dns(TWO_MX));
    const report = await deliver(s, job(['bob@dest.example']));
    expect(report.results).toEqual([
      expect.objectContaining({ status: 'delivered', mta: 'mx1.dest.example', mtaAddress: '127.0.0.2' }),
    ]);
    expect(one.received).toHaveLength(1);
    expect(two.received).toHaveLength(0);
    expect(one.received[0]?.rcpts.map((r) => r.address)).toEqual(['bob@dest.example']);
  });

  it('spreads mail over exchangers of equal preference', async () => {
    const one = await remote('127.0.0.2');
    const two = await remote('127.0.0.3');
    const zone: Zone = {
      ...TWO_MX,
      'even.example': {
        MX: [
          { exchange: 'mx1.dest.example', preference: 10 },
          { exchange: 'mx2.dest.example', preference: 10 },
        ],
      },
    };
    // No idle connections: every job chooses afresh.
    const s = await mx(await dns(zone), { idleTimeout: 0 });
    for (let i = 0; i < 24; i++) await deliver(s, job([`bob${i}@even.example`]));
    expect(one.received.length + two.received.length).toBe(24);
    expect(one.received.length).toBeGreaterThan(0);
    expect(two.received.length).toBeGreaterThan(0);
  });

  it('tries the address families in the configured order', async () => {
    const six = await startRemote('::1', port, { key: cert.key, cert: cert.cert });
    cleanups.push(() => six.close());
    const four = await remote('127.0.0.2');
    const zone: Zone = {
      'dual.example': { MX: [{ exchange: 'mx.dual.example', preference: 10 }] },
      'mx.dual.example': { A: ['127.0.0.2'], AAAA: ['::1'] },
    };
    const v4first = await mx(await dns(zone));
    expect((await deliver(v4first, job(['a@dual.example']))).results[0]).toMatchObject({
      status: 'delivered',
      mtaAddress: '127.0.0.2',
    });
    const v6first = await mx(await dns(zone), { addressFamilies: ['ipv6', 'ipv4'] });
    expect((await deliver(v6first, job(['b@dual.example']))).results[0]).toMatchObject({
      status: 'delivered',
      mtaAddress: '::1',
    });
    expect(four.received).toHaveLength(1);
    expect(six.received).toHaveLength(1);
  });

  it('connects from the configured source address with its EHLO name', async () => {
    const peers: string[] = [];
    const one = await remote('127.0.0.2', {
      onConnect(session, cb) {
        peers.push(session.remoteAddress);
        cb();
      },
    });
    const s = await mx(await dns(TWO_MX), {
      sources: [{ address: '127.0.0.9', heloName: 'out9.test.example' }],
    });
    const report = await deliver(s, job(['bob@dest.example']));
    expect(report.results[0]?.status).toBe('delivered');
    expect(peers).toEqual(['127.0.0.9']);
    expect(one.received[0]?.helo).toBe('out9.test.example');
  });

  it('falls back to the next exchanger when the first refuses connections', async () => {
    // Nothing listens on 127.0.0.2.
    const two = await remote('127.0.0.3');
    const s = await mx(await dns(TWO_MX));
    const report = await deliver(s, job(['bob@dest.example']));
    expect(report.results).toEqual([
      expect.objectContaining({ status: 'delivered', mta: 'mx2.dest.example', mtaAddress: '127.0.0.3' }),
    ]);
    expect(two.received).toHaveLength(1);
  });

  it('falls back to the next exchanger when the first answers 421 or drops the connection', async () => {
    const one = await remote('127.0.0.2', {
      onConnect: (_s, cb) => cb(smtpError(421, 'Too busy')),
    });
    const two = await remote('127.0.0.3');
    const s = await mx(await dns(TWO_MX));
    const report = await deliver(s, job(['bob@dest.example']));
    expect(report.results[0]).toMatchObject({ status: 'delivered', mta: 'mx2.dest.example' });
    expect(one.connections()).toBe(1);
    expect(two.received).toHaveLength(1);
  });

  it('defers when every exchanger fails, with the last one named', async () => {
    const s = await mx(await dns(TWO_MX));
    const report = await deliver(s, job(['bob@dest.example']));
    expect(report.results[0]).toMatchObject({
      status: 'deferred',
      mta: 'mx2.dest.example',
      mtaAddress: '127.0.0.3',
      reply: { code: 451, enhanced: '4.4.1' },
    });
  });

  it("delivers to the implicit MX (the domain's own address) when there is no MX record", async () => {
    const one = await remote('127.0.0.2');
    const s = await mx(await dns({ 'plain.example': { A: ['127.0.0.2'] } }));
    const report = await deliver(s, job(['bob@plain.example']));
    expect(report.results[0]).toMatchObject({
      status: 'delivered',
      mta: 'plain.example',
      mtaAddress: '127.0.0.2',
    });
    expect(one.received).toHaveLength(1);
  });

  it('follows a CNAME, for the domain and for an exchanger', async () => {
    const one = await remote('127.0.0.2');
    const zone: Zone = {
      ...TWO_MX,
      'alias.example': { CNAME: 'dest.example' },
      'other.example': { MX: [{ exchange: 'mail.other.example', preference: 10 }] },
      'mail.other.example': { CNAME: 'mx1.dest.example' },
    };
    const s = await mx(await dns(zone));
    const viaDomain = await deliver(s, job(['bob@alias.example']));
    expect(viaDomain.results[0]).toMatchObject({ status: 'delivered', mta: 'mx1.dest.example' });
    const viaExchanger = await deliver(s, job(['bob@other.example']));
    expect(viaExchanger.results[0]).toMatchObject({
      status: 'delivered',
      mta: 'mail.other.example',
      mtaAddress: '127.0.0.2',
    });
    expect(one.received).toHaveLength(2);
  });

  it('fails a null MX at once with 556 5.1.10 and connects nowhere', async () => {
    const one = await remote('127.0.0.2');
    const s = await mx(
      await dns({ 'nomail.example': { MX: [{ exchange: '', preference: 0 }], A: ['127.0.0.2'] } }),
    );
    const report = await deliver(s, job(['bob@nomail.example']));
    expect(report.results[0]).toMatchObject({ status: 'failed', reply: { code: 556, enhanced: '5.1.10' } });
    expect(one.connections()).toBe(0);
  });

  it('fails a domain that does not exist (5.1.2) and defers on a DNS failure (4.4.3)', async () => {
    const s = await mx(await dns({ 'broken.example': { rcode: 'SERVFAIL' } }));
    const gone = await deliver(s, job(['bob@gone.example']));
    expect(gone.results[0]).toMatchObject({ status: 'failed', reply: { code: 550, enhanced: '5.1.2' } });
    const broken = await deliver(s, job(['bob@broken.example']));
    expect(broken.results[0]).toMatchObject({ status: 'deferred', reply: { code: 451, enhanced: '4.4.3' } });
  });

  it('skips this host and every less preferred exchanger; 5.4.6 when nothing is left', async () => {
    const one = await remote('127.0.0.2');
    const three = await remote('127.0.0.3');
    const zone: Zone = {
      'backup.example': {
        MX: [
          { exchange: 'mx1.dest.example', preference: 10 },
          { exchange: 'mx.test.example', preference: 20 },
          { exchange: 'mx2.dest.example', preference: 30 },
        ],
      },
      'loop.example': {
        MX: [
          { exchange: 'relay.test.example', preference: 10 },
          { exchange: 'mx2.dest.example', preference: 20 },
        ],
      },
      'mx1.dest.example': { A: ['127.0.0.3'] },
      'mx2.dest.example': { A: ['127.0.0.2'] },
    };
    const s = await mx(await dns(zone), { localNames: ['relay.test.example'] });
    // mx1 is down: mx2 is less preferred than this host (mx.test.example), so it is not tried.
    await three.close();
    const backup = await deliver(s, job(['bob@backup.example']));
    expect(backup.results[0]).toMatchObject({ status: 'deferred', mta: 'mx1.dest.example' });
    const loop = await deliver(s, job(['bob@loop.example']));
    expect(loop.results[0]).toMatchObject({ status: 'failed', reply: { code: 554, enhanced: '5.4.6' } });
    expect(one.connections()).toBe(0);
  });

  it('delivers to address literals only when enabled', async () => {
    const one = await remote('127.0.0.2');
    const off = await mx(await dns({}));
    const refused = await deliver(off, job(['bob@[127.0.0.2]']));
    expect(refused.results[0]).toMatchObject({ status: 'failed', reply: { enhanced: '5.1.2' } });
    expect(one.connections()).toBe(0);
    const on = await mx(await dns({}), { addressLiterals: true });
    const sent = await deliver(on, job(['bob@[127.0.0.2]']));
    expect(sent.results[0]).toMatchObject({ status: 'delivered', mtaAddress: '127.0.0.2' });
    expect(one.received).toHaveLength(1);
  });
});

/** Per recipient: `defer...` gets 450, `reject...` 550, the rest 250. */
const PER_RECIPIENT: PeerOptions = {
  onRcptTo(address, _session, cb) {
    if (address.address.startsWith('defer')) cb(smtpError(450, 'Mailbox busy, try later'));
    else if (address.address.startsWith('reject')) cb(smtpError(550, 'No such user here'));
    else cb();
  },
};

describe('deliver-mx: transactions and results', () => {
  it('sends the recipients of one message in one transaction, with a result per recipient', async () => {
    const one = await remote('127.0.0.2', PER_RECIPIENT);
    const s = await mx(await dns(TWO_MX));
    const report = await deliver(s, job(['bob@dest.example', 'defer@dest.example', 'reject@dest.example']));
    expect(report.results).toEqual([
      expect.objectContaining({ recipient: 'bob@dest.example', status: 'delivered' }),
      expect.objectContaining({
        recipient: 'defer@dest.example',
        status: 'deferred',
        reply: expect.objectContaining({ code: 450 }),
        mta: 'mx1.dest.example',
      }),
      expect.objectContaining({
        recipient: 'reject@dest.example',
        status: 'failed',
        reply: expect.objectContaining({ code: 550, enhanced: '5.1.1' }),
        mta: 'mx1.dest.example',
      }),
    ]);
    expect(one.connections()).toBe(1);
    expect(one.received).toHaveLength(1);
    expect(one.received[0]?.rcpts.map((r) => r.address)).toEqual(['bob@dest.example']);
  });

  it('splits more recipients than maxRecipients into several transactions on one connection', async () => {
    const one = await remote('127.0.0.2');
    const s = await mx(await dns(TWO_MX), { maxRecipients: 2 });
    const to = ['a@dest.example', 'b@dest.example', 'c@dest.example', 'd@dest.example', 'e@dest.example'];
    const report = await deliver(s, job(to));
    expect(report.results.map((r) => r.status)).toEqual(to.map(() => 'delivered'));
    expect(one.received.map((r) => r.rcpts.length)).toEqual([2, 2, 1]);
    expect(one.connections()).toBe(1);
  });

  it("follows the remote's LIMITS: RCPTMAX recipients per transaction, MAILMAX transactions per connection", async () => {
    // The remote is a mailframe server with the limits plugin: LIMITS RCPTMAX=2 MAILMAX=2, enforced.
    let connections = 0;
    const peer = await startTestServer({
      config: { listeners: [{ name: 'smtp', host: '127.0.0.2', port }], limits: { maxRecipients: 2 } },
      plugins: [
        ['limits', { mailMax: 2 }],
        ['rcpt-local', { domains: ['dest.example'] }],
      ],
    });
    cleanups.push(() => peer.close());
    peer.server.hooks.connect.tap('count', () => {
      connections++;
      return undefined;
    });
    const s = await mx(await dns(TWO_MX));
    const to = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((l) => `${l}@dest.example`);
    const report = await deliver(s, job(to));
    expect(report.results.map((r) => r.status)).toEqual(to.map(() => 'delivered'));
    const batches = (await peer.waitForMessages(4)).map((m) => m.recipients.length);
    expect(batches).toEqual([2, 2, 2, 1]);
    expect(connections).toBe(2);
  });

  it('through the queue: bounces carry Remote-MTA and Diagnostic-Code; the queue shows MX host, address and reply', async () => {
    const one = await remote('127.0.0.2', PER_RECIPIENT);
    const origin = await remote('127.0.0.4');
    const zone: Zone = {
      ...TWO_MX,
      'origin.example': { MX: [{ exchange: 'mx.origin.example', preference: 5 }] },
      'mx.origin.example': { A: ['127.0.0.4'] },
    };
    const s = await mx(await dns(zone), {}, [{ plugin: 'queue-fs', config: { fsync: false } }]);
    const queue = s.server.registry.service('queue') as QueueService;
    const rcpt = (address: string) => ({ address, domain: 'dest.example', attributes: {} });
    const id = await queue.enqueue(
      {
        from: 'alice@origin.example',
        recipients: [rcpt('bob@dest.example'), rcpt('reject@dest.example'), rcpt('defer@dest.example')],
        attributes: {},
        receivedAt: Date.now(),
      },
      Buffer.from(MESSAGE),
    );
    await queue.runDue();
    expect(one.received).toHaveLength(1);
    // The bounce went to the sender's own MX.
    expect(origin.received).toHaveLength(1);
    const bounce = origin.received[0]?.data.toString('utf8') ?? '';
    expect(bounce).toMatch(/^Final-Recipient: rfc822; ?reject@dest\.example$/m);
    expect(bounce).toMatch(/^Remote-MTA: dns; ?mx1\.dest\.example$/m);
    expect(bounce).toMatch(/^Diagnostic-Code: smtp; ?550 5\.1\.1 No such user here$/m);
    expect(bounce).not.toMatch(/bob@dest\.example/);
    const shown = await queue.show(id);
    const deferred = shown?.recipientStates.find((r) => r.address === 'defer@dest.example');
    expect(deferred).toMatchObject({
      status: 'pending',
      attempts: 1,
      mta: 'mx1.dest.example',
      mtaAddress: '127.0.0.2',
      reply: expect.objectContaining({ code: 450 }),
    });
    // The queue CLI shows the exchanger and its address after the last reply.
    const configFile = join(s.dataDir, 'mailframe.json');
    await writeFile(configFile, JSON.stringify({ dataDir: s.dataDir, plugins: [{ plugin: 'queue-fs' }] }));
    let out = '';
    const code = await runQueueCli(['show', id], configFile, { out: (t) => (out += t), err: () => {} });
    expect(code).toBe(0);
    expect(out).toMatch(
      /pending.*defer@dest\.example.*450 .*Mailbox busy.*\(mx1\.dest\.example \[127\.0\.0\.2\]\)/,
    );
    // And so do the logs, per recipient not delivered.
    expect(s.logs).toContainEqual(
      expect.objectContaining({
        msg: 'recipient deferred',
        to: 'defer@dest.example',
        mta: 'mx1.dest.example',
        mtaAddress: '127.0.0.2',
        code: 450,
        qid: id,
      }),
    );
  });

  it('through the queue: a null MX fails at once and is not retried', async () => {
    const one = await remote('127.0.0.2');
    const zone: Zone = { 'nomail.example': { MX: [{ exchange: '', preference: 0 }], A: ['127.0.0.2'] } };
    const s = await mx(await dns(zone), {}, [{ plugin: 'queue-fs', config: { fsync: false } }]);
    const queue = s.server.registry.service('queue') as QueueService;
    await queue.enqueue(
      {
        from: '',
        recipients: [{ address: 'bob@nomail.example', domain: 'nomail.example', attributes: {} }],
        attributes: {},
        receivedAt: Date.now(),
      },
      Buffer.from(MESSAGE),
    );
    await queue.runDue();
    expect(await queue.list()).toEqual([]);
    expect(one.connections()).toBe(0);
  });
});

describe('deliver-mx: connections per destination', () => {
  it('reuses one connection for many messages to the same destination (RSET between them)', async () => {
    const one = await remote('127.0.0.2');
    const s = await mx(await dns(TWO_MX), { idleTimeout: 10_000 });
    for (let i = 0; i < 10; i++) {
      const report = await deliver(s, job([`bob${i}@dest.example`], { id: `job-${i}` }));
      expect(report.results[0]?.status).toBe('delivered');
    }
    expect(one.received).toHaveLength(10);
    expect(one.connections()).toBe(1);
  });

  it('opens a new connection after maxMessagesPerConnection, and when the idle one was closed', async () => {
    const one = await remote('127.0.0.2', { socketTimeout: 60_000 });
    const s = await mx(await dns(TWO_MX), { maxMessagesPerConnection: 3 });
    for (let i = 0; i < 7; i++) await deliver(s, job([`bob${i}@dest.example`]));
    expect(one.received).toHaveLength(7);
    expect(one.connections()).toBe(3);
  });

  it('keeps at most maxIdle idle connections, closing the longest idle first', async () => {
    const one = await remote('127.0.0.2');
    const two = await remote('127.0.0.3');
    const zone: Zone = {
      ...TWO_MX,
      'second.example': { MX: [{ exchange: 'mx2.dest.example', preference: 10 }] },
    };
    const s = await mx(await dns(zone), { maxIdle: 1, idleTimeout: 10_000 });
    await deliver(s, job(['a@dest.example']));
    await deliver(s, job(['b@second.example']));
    // dest.example's idle connection made room for second.example's.
    await deliver(s, job(['c@dest.example']));
    await deliver(s, job(['d@dest.example']));
    expect(one.received).toHaveLength(3);
    expect(two.received).toHaveLength(1);
    expect(one.connections()).toBe(2);
    expect(two.connections()).toBe(1);
  });

  it('never opens more connections to a destination than perDestination, however many jobs run at once', async () => {
    const one = await remote('127.0.0.2', {
      // Hold each transaction a little, so that jobs overlap.
      onMailFrom(_address, _session, cb) {
        setTimeout(() => cb(), 20);
      },
    });
    const s = await mx(await dns(TWO_MX), { perDestination: 3, initialConcurrency: 3 });
    const jobs = Array.from({ length: 30 }, (_, i) => job([`bob${i}@dest.example`], { id: `job-${i}` }));
    const reports = await Promise.all(jobs.map((j) => deliver(s, j)));
    expect(reports.flatMap((r) => r.results.map((x) => x.status))).toEqual(jobs.map(() => 'delivered'));
    expect(one.maxSimultaneous()).toBeLessThanOrEqual(3);
    expect(one.maxSimultaneous()).toBeGreaterThan(1);
    expect(one.connections()).toBeLessThanOrEqual(3);
  });

  it('never has more connections in use overall than concurrency', async () => {
    // Both remotes count the transactions under way (MAIL to the end of the data) together.
    let inFlight = 0;
    let most = 0;
    const hold: PeerOptions = {
      onMailFrom(_address, _session, cb) {
        inFlight++;
        most = Math.max(most, inFlight);
        // Hold the transaction a little, so that jobs overlap.
        setTimeout(() => cb(), 20);
      },
      answerData() {
        inFlight--;
        return undefined;
      },
    };
    await remote('127.0.0.2', hold);
    await remote('127.0.0.3', hold);
    const zone: Zone = {
      ...TWO_MX,
      'second.example': { MX: [{ exchange: 'mx2.dest.example', preference: 10 }] },
    };
    const s = await mx(await dns(zone), { concurrency: 2 });
    const jobs = Array.from({ length: 20 }, (_, i) =>
      job([`bob${i}@${i % 2 === 0 ? 'dest' : 'second'}.example`], { id: `job-${i}` }),
    );
    const reports = await Promise.all(jobs.map((j) => deliver(s, j)));
    expect(reports.flatMap((r) => r.results.map((x) => x.status))).toEqual(jobs.map(() => 'delivered'));
    expect(most).toBe(2);
  });

  it('backs off a dead destination: after failureThreshold failures its jobs are deferred without connecting', async () => {
    const dead = await startSlammer('127.0.0.2', port);
    cleanups.push(() => dead.close());
    const zone: Zone = {
      'dead.example': { MX: [{ exchange: 'mx.dead.example', preference: 10 }] },
      'mx.dead.example': { A: ['127.0.0.2'] },
    };
    const s = await mx(await dns(zone), { failureThreshold: 2, backoff: 600_000 });
    const replies: string[] = [];
    for (let i = 0; i < 10; i++) {
      const report = await deliver(s, job([`bob${i}@dead.example`]));
      expect(report.results[0]?.status).toBe('deferred');
      replies.push(report.results[0]?.reply?.enhanced ?? '');
    }
    expect(dead.connections()).toBe(2);
    expect(replies.slice(2)).toEqual(Array.from({ length: 8 }, () => '4.4.1'));
  });

  it('probes a dead destination again once the back-off is over, and delivers when it is back', async () => {
    let now = Date.parse('2026-03-02T10:00:00Z');
    const clock = { now: () => now };
    const zone: Zone = {
      'dead.example': { MX: [{ exchange: 'mx.dead.example', preference: 10 }] },
      'mx.dead.example': { A: ['127.0.0.2'] },
    };
    const s = await mx(await dns(zone), { failureThreshold: 1, backoff: 60_000 }, [], clock);
    const first = await deliver(s, job(['a@dead.example']));
    expect(first.results[0]?.reply?.text).toMatch(/Cannot connect/);
    const backingOff = await deliver(s, job(['b@dead.example']));
    expect(backingOff.results[0]?.reply?.text).toMatch(/not trying before 2026-03-02T10:01:00/);
    const one = await remote('127.0.0.2');
    now += 60_000;
    const probe = await deliver(s, job(['c@dead.example']));
    expect(probe.results[0]?.status).toBe('delivered');
    expect(one.connections()).toBe(1);
  });
});

describe('deliver-mx: TLS policy', () => {
  it('`may` delivers over STARTTLS when offered (any certificate) and in clear when not', async () => {
    const tls = await remote('127.0.0.2');
    const clear = await remote('127.0.0.3', { hideSTARTTLS: true });
    const zone: Zone = {
      ...TWO_MX,
      'clear.example': { MX: [{ exchange: 'mx2.dest.example', preference: 10 }] },
    };
    const s = await mx(await dns(zone));
    expect((await deliver(s, job(['bob@dest.example']))).results[0]?.status).toBe('delivered');
    expect((await deliver(s, job(['bob@clear.example']))).results[0]?.status).toBe('delivered');
    expect(tls.received[0]?.secure).toBe(true);
    expect(clear.received[0]?.secure).toBe(false);
  });

  it('`may` sends in clear to a remote whose TLS handshake fails; `encrypt` defers (4.7.5)', async () => {
    // Offers STARTTLS, but only TLS 1.1, which the client refuses: the handshake fails.
    const broken = await remote('127.0.0.2', { maxVersion: 'TLSv1.1' } as PeerOptions);
    const zone: Zone = {
      ...TWO_MX,
      'strict.example': { MX: [{ exchange: 'mx1.dest.example', preference: 10 }] },
    };
    const s = await mx(await dns(zone), { tlsPolicies: { 'strict.example': 'encrypt' } });
    const may = await deliver(s, job(['bob@dest.example']));
    expect(may.results[0]).toMatchObject({ status: 'delivered', mta: 'mx1.dest.example' });
    expect(broken.received).toHaveLength(1);
    expect(broken.received[0]?.secure).toBe(false);
    const strict = await deliver(s, job(['bob@strict.example']));
    expect(strict.results[0]).toMatchObject({ status: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(broken.received).toHaveLength(1);
  });

  it('`encrypt` defers (4.7.4) at a remote without STARTTLS; `none` sends in clear', async () => {
    const clear = await remote('127.0.0.2', { hideSTARTTLS: true });
    const tls = await remote('127.0.0.3');
    const zone: Zone = {
      ...TWO_MX,
      'clear.example': { MX: [{ exchange: 'mx1.dest.example', preference: 10 }] },
      'plain.example': { MX: [{ exchange: 'mx2.dest.example', preference: 10 }] },
    };
    const s = await mx(await dns(zone), {
      tlsPolicies: { 'clear.example': 'encrypt', 'plain.example': 'none' },
    });
    const report = await deliver(s, job(['bob@clear.example']));
    expect(report.results[0]).toMatchObject({ status: 'deferred', reply: { enhanced: '4.7.4' } });
    expect(clear.received).toHaveLength(0);
    expect((await deliver(s, job(['bob@plain.example']))).results[0]?.status).toBe('delivered');
    expect(tls.received[0]?.secure).toBe(false);
  });

  it('`verify` checks the certificate against the MX host name', async () => {
    // The certificate names localhost: good for an MX called localhost, not for mx1.dest.example.
    const one = await remote('127.0.0.2');
    const zone: Zone = {
      ...TWO_MX,
      'bad.example': { MX: [{ exchange: 'mx1.dest.example', preference: 10 }] },
      'good.example': { MX: [{ exchange: 'localhost', preference: 10 }] },
      localhost: { A: ['127.0.0.2'] },
    };
    const s = await mx(await dns(zone), { tlsPolicy: 'verify', caFile: cert.certPath });
    const bad = await deliver(s, job(['bob@bad.example']));
    expect(bad.results[0]).toMatchObject({ status: 'deferred', reply: { enhanced: '4.7.5' } });
    const good = await deliver(s, job(['bob@good.example']));
    expect(good.results[0]).toMatchObject({ status: 'delivered', mta: 'localhost' });
    expect(one.received).toHaveLength(1);
    expect(one.received[0]?.secure).toBe(true);
  });
});
