/**
 * The `rspamd` plugin against a real rspamd (Debian's package, started with
 * the project's own config by test/helpers/rspamd.ts, one per file): GTUBE is
 * refused, a plain message accepted (and tagged when configured), our SPF,
 * DKIM and DMARC results reach rspamd's score, rspamd's actions map to ours
 * (quarantine included), and an outage or a scanner that never answers is
 * accepted (failOpen) or refused for now.
 */
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import Type from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runQueueCli } from '../../bin/queue-cli.ts';
import { definePlugin } from '../../core/plugin.ts';
import type { TestPlugin, TestServer } from '../../core/testkit.ts';
// The `spf`, `dkim` and `dmarc` result types (declared by their plugins on PolicyChecks).
import type {} from '../../plugins/dkim-verify/index.ts';
import type {} from '../../plugins/dmarc/index.ts';
import { recordResult } from '../../plugins/policy/policy.ts';
import type { QueueSummary } from '../../plugins/queue/types.ts';
import type { RspamdResult } from '../../plugins/rspamd/index.ts';
import type {} from '../../plugins/spf/index.ts';
import { freePort, type RspamdPeer, startRspamd } from '../helpers/rspamd.ts';
import { useScope } from '../helpers/scope.ts';
import { resultsProbe } from '../helpers/test-plugins.ts';
import { Deliverer, FakeClock, sendMail, useQueueScope } from './queue-harness.ts';

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

const scope = useScope();
const queues = useQueueScope();
let rspamd: RspamdPeer;

beforeAll(async () => {
  rspamd = await startRspamd();
}, 90_000);

afterAll(async () => {
  await rspamd?.stop();
});

/** Records SPF fail, DKIM fail and DMARC fail (p=reject) as our checks would. */
const failingChecks = definePlugin({
  name: 'test-failing-checks',
  schema: Type.Object({}),
  register(api) {
    api.hooks.message.tap((tx) => {
      recordResult(tx, 'spf', { result: 'fail', identity: 'mailfrom', domain: 'example.org' });
      recordResult(tx, 'dkim', { result: 'fail', properties: { 'header.d': 'example.org' } });
      recordResult(tx, 'dmarc', { result: 'fail', domain: 'example.org', policy: 'reject' });
      return undefined;
    });
  },
});

async function start(config: Record<string, unknown> = {}, before: TestPlugin[] = []) {
  const seen: RspamdResult[] = [];
  const t = await scope.start({
    plugins: [
      ...before,
      // The plugin's hook timeout above its scan timeout: a scan on a loaded machine may take seconds.
      { plugin: 'rspamd', config: { url: rspamd.url, timeout: 8000, ...config }, timeout: 10_000 },
      resultsProbe('rspamd', (results) => seen.push(...results)),
      ['rcpt-local', { domains: ['example.com'] }],
    ],
  });
  return { t, seen };
}

/** A well-formed message from a@example.org to bob@example.com with `body`. */
const message = (body: string) =>
  `From: A <a@example.org>\r\nTo: Bob <bob@example.com>\r\nSubject: Lunch\r\nMessage-ID: <m1@example.org>\r\nDate: Fri, 04 Dec 2026 08:00:00 +0000\r\n\r\n${body}\r\n`;

/** Send one message from a@example.org to bob@example.com; the reply to the end of data. */
async function send(t: TestServer, body: string) {
  const c = await scope.connect(t);
  await c.expect('EHLO client.example.org', 250);
  await c.expect('MAIL FROM:<a@example.org>', 250);
  await c.expect('RCPT TO:<bob@example.com>', 250);
  await c.expect('DATA', 354);
  const r = await c.sendData(message(body));
  await c.expect('QUIT', 221);
  return r;
}

const PLAIN = 'Shall we have lunch on Tuesday? The usual place at noon.';

/** An HTTP server that takes the request and never answers. */
async function silentScanner(): Promise<{ url: string; requests: () => number }> {
  let requests = 0;
  const server: Server = createServer(() => {
    requests++;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  scope.defer(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  return { url: `http://127.0.0.1:${address.port}`, requests: () => requests };
}

describe('rspamd', () => {
  it('refuses GTUBE with 550 5.7.1 (rspamd says reject)', async () => {
    const { t } = await start();
    const r = await send(t, GTUBE);
    expect(r.raw).toMatch(/^550 5\.7\.1 /);
    expect(t.queued).toHaveLength(0);
  });

  it('records reject, the score and the GTUBE symbol', async () => {
    const { t, seen } = await start({ actions: { reject: { action: 'tag' } } });
    const r = await send(t, GTUBE);
    expect(r.code).toBe(250);
    expect(seen[0]).toMatchObject({ result: 'fail', action: 'reject' });
    expect(seen[0]?.symbols?.map((s) => s.name)).toContain('GTUBE');
    // Accepted spam is tagged.
    expect(t.queued[0]?.text).toMatch(
      /^X-Spam: Yes\r\nX-Spamd-Result: default: True \[15\.00 \/ 15\.00\];\r\n\tGTUBE\(0\.00\)\r\n/,
    );
  });

  it('accepts a plain message (no action), untagged by default and tagged with headers "always"', async () => {
    const { t, seen } = await start();
    expect((await send(t, PLAIN)).code).toBe(250);
    expect(seen[0]).toMatchObject({ result: 'pass', action: 'no action' });
    expect(t.queued[0]?.text).not.toMatch(/^X-Spam/im);

    const always = await start({ headers: 'always' });
    expect((await send(always.t, PLAIN)).code).toBe(250);
    const text = always.t.queued[0]?.text ?? '';
    expect(text).toMatch(/^X-Spam: No\r\nX-Spamd-Result: default: False \[-?\d+\.\d\d \/ 15\.00\];\r\n\t/);
    // The Received field our server added is in what rspamd saw: it is below the tags.
    expect(text.indexOf('X-Spamd-Result')).toBeLessThan(text.indexOf('Received:'));
  });

  it('passes our SPF, DKIM and DMARC results to rspamd as its symbols, which count in its score', async () => {
    const { t, seen } = await start({}, [failingChecks]);
    expect((await send(t, PLAIN)).code).toBe(250);
    const names = seen[0]?.symbols?.map((s) => s.name) ?? [];
    expect(names).toEqual(expect.arrayContaining(['R_SPF_FAIL', 'R_DKIM_REJECT', 'DMARC_POLICY_REJECT']));
    // With them the plain message is spam by rspamd's default thresholds: tagged.
    expect(seen[0]).toMatchObject({ action: 'add header', result: 'softfail' });
    expect(t.queued[0]?.text).toMatch(/^X-Spam: Yes\r\n/);

    const off = await start({ passResults: false }, [failingChecks]);
    expect((await send(off.t, PLAIN)).code).toBe(250);
    expect(off.seen[0]?.symbols?.map((s) => s.name)).not.toContain('R_SPF_FAIL');
    expect(off.seen[0]?.action).toBe('no action');
  });

  it('maps rspamd actions through the action map: add header to quarantine, greylist reply', async () => {
    const q = await start({ actions: { 'add header': { action: 'quarantine' } } }, [failingChecks]);
    expect((await send(q.t, PLAIN)).code).toBe(250);
    expect(q.t.queued[0]?.attributes.quarantine).toEqual({ check: 'rspamd', result: 'add header' });

    const refuse = await start(
      { actions: { 'add header': { action: 'tempfail', code: 450, text: 'Come back later' } } },
      [failingChecks],
    );
    expect((await send(refuse.t, PLAIN)).raw).toMatch(/^450 4\.7\.1 Come back later/);
    expect(refuse.t.queued).toHaveLength(0);
  });

  it('rspamd down: failOpen accepts (result temperror); fail-closed answers 451 4.7.1', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const open = await start({ url: closed });
    expect((await send(open.t, GTUBE)).code).toBe(250);
    expect(open.seen[0]).toMatchObject({ result: 'temperror' });
    expect(open.t.queued[0]?.text).not.toMatch(/^X-Spam/im);

    const shut = await start({ url: closed, failOpen: false });
    expect((await send(shut.t, PLAIN)).raw).toMatch(/^451 4\.7\.1 /);
    expect(shut.t.queued).toHaveLength(0);
  });

  it('a scanner that never answers: the timeout gives failOpen accept or 451 4.7.1', async () => {
    const silent = await silentScanner();
    const open = await start({ url: silent.url, timeout: 300 });
    expect((await send(open.t, PLAIN)).code).toBe(250);
    expect(open.seen[0]).toMatchObject({
      result: 'temperror',
      reason: expect.stringMatching(/within 300 ms/),
    });

    const shut = await start({ url: silent.url, timeout: 300, failOpen: false });
    expect((await send(shut.t, PLAIN)).raw).toMatch(/^451 4\.7\.1 /);
    expect(silent.requests()).toBe(2);
  });

  it('an HTTP error or an answer that is not rspamd JSON is an outage too', async () => {
    const answers = [
      { status: 503, body: 'overloaded' },
      { status: 200, body: '<html>hello</html>' },
    ];
    const server: Server = createServer((req, res) => {
      req.resume();
      const a = answers.shift() ?? { status: 500, body: '' };
      req.on('end', () => {
        res.statusCode = a.status;
        res.end(a.body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    scope.defer(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const address = server.address();
    if (typeof address !== 'object' || address === null) throw new Error('no address');
    const { t, seen } = await start({ url: `http://127.0.0.1:${address.port}` });
    expect((await send(t, PLAIN)).code).toBe(250);
    expect((await send(t, PLAIN)).code).toBe(250);
    expect(seen.map((r) => [r.result, r.reason])).toEqual([
      ['temperror', 'rspamd answered HTTP 503: overloaded'],
      ['temperror', 'rspamd answered with something that is not JSON'],
    ]);
  });

  it('sends the envelope: the client address, HELO, sender, every recipient and the queue id', async () => {
    const got: Array<Record<string, string[] | undefined>> = [];
    const bodies: Buffer[] = [];
    const server: Server = createServer((req, res) => {
      got.push({ ...req.headersDistinct });
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push(Buffer.concat(chunks));
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ action: 'no action', score: 0, required_score: 15, symbols: {} }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    scope.defer(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const address = server.address();
    if (typeof address !== 'object' || address === null) throw new Error('no address');
    const { t } = await start({ url: `http://127.0.0.1:${address.port}` });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example.org', 250);
    await c.expect('MAIL FROM:<a@example.org>', 250);
    await c.expect('RCPT TO:<bob@example.com>', 250);
    await c.expect('RCPT TO:<carol@example.com>', 250);
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\nhi\r\n')).code).toBe(250);
    expect(got[0]).toMatchObject({
      ip: ['127.0.0.1'],
      helo: ['client.example.org'],
      from: ['a@example.org'],
      rcpt: ['bob@example.com', 'carol@example.com'],
      'content-type': ['message/rfc822'],
    });
    expect(got[0]?.['queue-id']?.[0]).toMatch(/\S/);
    // The prepended Received field is part of what is sent, and Content-Length counts exactly what was.
    const body = bodies[0]?.toString('latin1') ?? '';
    expect(body).toMatch(/^Received: from client\.example\.org [\s\S]*\r\nSubject: x\r\n\r\nhi\r\n$/);
    expect(Number(got[0]?.['content-length']?.[0])).toBe(bodies[0]?.length);
  });

  it('rspamd verdict mapped to quarantine: queued apart, listed by `queue quarantine list`, released to delivery', async () => {
    const clock = new FakeClock();
    const dir = await queues.tempDir();
    const config = join(dir, 'mailframe.json');
    await writeFile(config, JSON.stringify({ dataDir: './data', plugins: [{ plugin: 'queue-fs' }] }));
    const d = new Deliverer(clock);
    const s = await queues.start({
      clock,
      dataDir: join(dir, 'data'),
      plugins: [
        failingChecks,
        {
          plugin: 'rspamd',
          id: 'rspamd',
          config: { url: rspamd.url, timeout: 8000, actions: { 'add header': { action: 'quarantine' } } },
        },
        d.plugin,
      ],
    });
    const spam = await sendMail(s.port, {
      from: 'a@example.org',
      to: ['bob@example.com'],
      body: message(PLAIN),
    });
    await s.queue.runDue();
    expect(d.seen).toEqual([]);
    let out = '';
    const cli = (...argv: string[]) => runQueueCli(argv, config, { out: (t) => (out += t), err: () => {} });
    expect(await cli('quarantine', 'list', '--json')).toBe(0);
    const listed = JSON.parse(out) as QueueSummary[];
    expect(listed.map((m) => [m.id, m.quarantine])).toEqual([
      [spam, { check: 'rspamd', result: 'add header' }],
    ]);
    expect(await cli('quarantine', 'release', spam)).toBe(0);
    await s.queue.runDue();
    expect(d.seen.map((x) => x.job.id)).toEqual([spam]);
    expect(d.seen[0]?.message).toMatch(/^X-Spam: Yes\r\n/);
  });
});
