/**
 * The `dkim-verify` plugin against keys published by a test DNS server on
 * loopback: every result value, several signatures on one message, a message
 * spilled to disk, and messages signed by an independent implementation
 * (Debian's python3-dkim) for RSA-2048 and Ed25519; each on the event loop
 * and with `workers: 1` and `workers: 2` (verified in worker threads, which
 * must have answered for every message held in memory). Then the threads
 * themselves: one that exits with a message in flight, and threads ending
 * with the server and with a reload that drops the plugin.
 */

import { execFile } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import pino, { type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { SmtpReply, TestDnsZone, TestServer } from '../../core/testkit.ts';
import { startTestServer } from '../../core/testkit.ts';
import { dkimRecord } from '../../plugins/dkim-sign/keys.ts';
import type { DkimResult } from '../../plugins/dkim-verify/index.ts';
import { VerifierPool, verifierPools } from '../../plugins/dkim-verify/threads.ts';
import { ensurePythonDkim, interop } from '../helpers/python-dkim.ts';
import { resultsProbe } from '../helpers/test-plugins.ts';

let dir: string;
let rsaPem: string;
let edPem: string;
let weakPem: string;
let zone: TestDnsZone;

function pair(type: 'rsa' | 'ed25519', bits = 2048): { priv: KeyObject; record: string } {
  const { privateKey, publicKey } =
    type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: bits }) : generateKeyPairSync('ed25519');
  return { priv: privateKey, record: dkimRecord(type, publicKey) };
}

beforeAll(async () => {
  await ensurePythonDkim();
  dir = await mkdtemp(join(tmpdir(), 'mailframe-dkimv-'));
  const rsa = pair('rsa');
  const ed = pair('ed25519');
  const weak = pair('rsa', 512);
  rsaPem = rsa.priv.export({ type: 'pkcs1', format: 'pem' }).toString();
  edPem = ed.priv.export({ type: 'pkcs8', format: 'pem' }).toString();
  weakPem = weak.priv.export({ type: 'pkcs1', format: 'pem' }).toString();
  await writeFile(join(dir, 'rsa.pem'), rsaPem);
  // python3-dkim takes an Ed25519 private key as the base64 of its 32-octet seed (RFC 8463 section 4).
  const seed = Buffer.from(createPrivateKey(edPem).export({ format: 'jwk' }).d ?? '', 'base64url');
  await writeFile(join(dir, 'ed.key'), seed.toString('base64'));
  zone = {
    'r1._domainkey.example.org': { TXT: [rsa.record] },
    'e1._domainkey.example.org': { TXT: [ed.record] },
    'weak._domainkey.example.org': { TXT: [weak.record] },
    'broken._domainkey.example.org': { TXT: ['v=DKIM1; k=rsa; p=bm90IGEga2V5'] },
    'down._domainkey.example.org': { rcode: 'SERVFAIL' },
    'revoked._domainkey.example.org': { TXT: ['v=DKIM1; k=rsa; p='] },
    // Never answered: a message signed with it waits for its key (until the resolver's timeout).
    'slow._domainkey.example.org': { TXT: [rsa.record], drop: true },
  };
}, 300_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const MESSAGE = [
  'From: Alice <alice@example.org>',
  'To: bob@example.net',
  'Subject: verify me',
  'Date: Fri, 04 Dec 2026 07:00:00 +0000',
  'Message-ID: <v1@example.org>',
  '',
  'Hello Bob,',
  '',
  'signed text.',
  '',
].join('\r\n');

async function mailauthSigned(
  message: string,
  selector: string,
  privateKey: string,
  extra: { signTime?: Date; expires?: Date } = {},
  signature: { canonicalization?: string; maxBodyLength?: number } = {},
): Promise<string> {
  const data = { signingDomain: 'example.org', selector, privateKey, ...signature };
  const r = await dkimSign(message, { ...data, signatureData: [data], ...extra });
  expect(r.errors).toEqual([]);
  return r.signatures + message;
}

async function pythonSigned(
  message: string,
  selector: string,
  file: string,
  type: 'rsa' | 'ed25519',
): Promise<string> {
  const r = await interop(['sign', selector, 'example.org', join(dir, file), type], message);
  expect(r.code, r.stdout).toBe(0);
  return r.stdout.replace(/\r?\n$/, '').replace(/\r?\n/g, '\r\n') + '\r\n' + message;
}

/** The dkim-verify pool of a test server started with `workers` (exactly one instance). */
function poolOf(t: TestServer): VerifierPool {
  const [pool, more] = verifierPools(t.server.facts);
  if (pool === undefined || more !== undefined) throw new Error('expected one dkim-verify pool');
  return pool;
}

/**
 * Send `data` through a server with dkim-verify configured with `config`: the
 * reply to the message, the results, and how many messages worker threads
 * verified (0 without `workers`).
 */
async function verifyWith(
  data: string,
  config: Record<string, unknown>,
  logger?: Logger,
): Promise<{ reply: SmtpReply; results: readonly DkimResult[] | undefined; threaded: number }> {
  let seen: readonly DkimResult[] | undefined;
  const probe = resultsProbe('dkim', (results) => {
    seen = results;
  });
  const t = await startTestServer({
    dns: zone,
    plugins: [['dkim-verify', config], probe, ['rcpt-local', { domains: ['example.net'] }]],
    ...(logger ? { logger } : {}),
  });
  try {
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@example.org>', 250);
    await c.expect('RCPT TO:<bob@example.net>', 250);
    await c.expect('DATA', 354);
    const reply = await c.sendData(data);
    await c.close();
    const threaded = config.workers ? poolOf(t).answered : 0;
    return { reply, results: seen, threaded };
  } finally {
    await t.close();
  }
}

/** Where the cases below verify: on the event loop, and in one or two worker threads. */
const MODES = [
  { mode: 'on the event loop', config: {} },
  { mode: 'workers: 1', config: { workers: 1 } },
  { mode: 'workers: 2', config: { workers: 2 } },
] as const;

describe.each(MODES)('dkim-verify ($mode)', ({ config: where }) => {
  const threads = 'workers' in where ? 1 : 0;
  /** `verifyWith` here: a message held in memory is verified by a thread when there are threads. */
  const verifyHere = async (data: string, config: Record<string, unknown>, logger?: Logger) => {
    const r = await verifyWith(data, { ...where, ...config }, logger);
    expect(r.threaded).toBe(threads);
    return r;
  };
  const verify = async (data: string) => (await verifyHere(data, {})).results;

  it('passes an RSA-2048 signature made by python3-dkim', async () => {
    const r = await verify(await pythonSigned(MESSAGE, 'r1', 'rsa.pem', 'rsa'));
    expect(r).toEqual([
      {
        result: 'pass',
        domain: 'example.org',
        selector: 'r1',
        algorithm: 'rsa-sha256',
        properties: {
          'header.d': 'example.org',
          'header.i': '@example.org',
          'header.s': 'r1',
          'header.a': 'rsa-sha256',
          // RFC 6008: the first characters of b=, to tell signatures apart.
          'header.b': expect.stringMatching(/^[A-Za-z0-9+/]{8}$/),
        },
      },
    ]);
  });

  it('passes an Ed25519 signature made by python3-dkim (RFC 8463)', async () => {
    const r = await verify(await pythonSigned(MESSAGE, 'e1', 'ed.key', 'ed25519'));
    expect(r).toMatchObject([
      { result: 'pass', domain: 'example.org', selector: 'e1', algorithm: 'ed25519-sha256' },
    ]);
  });

  it('records none for a message without signatures', async () => {
    expect(await verify(MESSAGE)).toEqual([{ result: 'none' }]);
  });

  it('fails a signature whose body was changed, and records every signature of the message', async () => {
    const signed = await mailauthSigned(await mailauthSigned(MESSAGE, 'r1', rsaPem), 'e1', edPem);
    const r = await verify(signed.replace('signed text.', 'changed text.'));
    expect(r?.map((x) => [x.selector, x.result])).toEqual([
      ['e1', 'fail'],
      ['r1', 'fail'],
    ]);
    expect(r?.[0]?.reason).toMatch(/body hash/);
    const ok = await verify(signed);
    expect(ok?.map((x) => [x.selector, x.result])).toEqual([
      ['e1', 'pass'],
      ['r1', 'pass'],
    ]);
  });

  it('permerror when the key is not published, is not a key, or is too short', async () => {
    const noKey = await verify(await mailauthSigned(MESSAGE, 'gone', rsaPem));
    expect(noKey).toMatchObject([
      {
        result: 'permerror',
        domain: 'example.org',
        selector: 'gone',
        algorithm: 'rsa-sha256',
        reason: 'no key',
      },
    ]);
    const broken = await verify(await mailauthSigned(MESSAGE, 'broken', rsaPem));
    expect(broken?.[0]?.result).toBe('permerror');
    const weak = await verify(await mailauthSigned(MESSAGE, 'weak', weakPem));
    expect(weak?.[0]?.result).toBe('permerror');
  });

  it('temperror when the key lookup fails with SERVFAIL', async () => {
    const r = await verify(await mailauthSigned(MESSAGE, 'down', rsaPem));
    expect(r?.[0]).toMatchObject({ result: 'temperror', domain: 'example.org', selector: 'down' });
  });

  it('neutral for an expired signature', async () => {
    const past = new Date(Date.now() - 10 * 86400_000);
    const r = await verify(
      await mailauthSigned(MESSAGE, 'r1', rsaPem, {
        signTime: past,
        expires: new Date(past.getTime() + 3600_000),
      }),
    );
    expect(r?.[0]).toMatchObject({ result: 'neutral', selector: 'r1', reason: 'expired' });
  });

  it('verifies a message that spilled to disk (streamed from the spool file, on the event loop)', async () => {
    const big = MESSAGE + `${'y'.repeat(76)}\r\n`.repeat(8000);
    const r = await verifyWith(await pythonSigned(big, 'r1', 'rsa.pem', 'rsa'), where);
    expect(r.results?.[0]?.result).toBe('pass');
    expect(r.threaded).toBe(0);
  });

  it('the actions map decides on the best signature: fail refused with 550 5.7.20 unless another passes, temperror 451', async () => {
    const actions = { actions: { fail: { action: 'reject' }, temperror: { action: 'tempfail' } } };
    const one = await mailauthSigned(MESSAGE, 'r1', rsaPem);
    const failed = await verifyHere(one.replace('signed text.', 'changed text.'), actions);
    expect([failed.reply.code, failed.reply.enhanced]).toEqual([550, '5.7.20']);
    // A failing signature next to a passing one: the message has a valid signature and is accepted.
    const mixed = await mailauthSigned(await mailauthSigned(MESSAGE, 'gone', rsaPem), 'r1', rsaPem);
    const ok = await verifyHere(mixed, actions);
    expect(ok.results?.map((x) => x.result)).toEqual(['pass', 'permerror']);
    expect(ok.reply.code).toBe(250);
    const down = await verifyHere(await mailauthSigned(MESSAGE, 'down', rsaPem), actions);
    expect([down.reply.code, down.reply.enhanced]).toEqual([451, '4.7.20']);
    expect((await verifyHere(one, actions)).reply.code).toBe(250);
  });

  it('l= signs part of the body: appended text still passes (recorded bodyLength), a body shorter than l= fails', async () => {
    // The relaxed canonical body of MESSAGE starts "Hello Bob,\r\n\r\nsigned text.\r\n" (28 octets).
    const signed = await mailauthSigned(MESSAGE, 'r1', rsaPem, {}, { maxBodyLength: 14 });
    expect(signed).toMatch(/l=14/);
    const appended = await verify(`${signed}P.S. added by a list\r\n`);
    expect(appended).toMatchObject([{ result: 'pass', selector: 'r1', bodyLength: 14 }]);
    const cut = await verify(signed.replace('Hello Bob,\r\n\r\nsigned text.\r\n', 'Hi\r\n'));
    expect(cut).toMatchObject([{ result: 'fail', reason: 'body shorter than l=' }]);
  });

  it('fails a signature over changed header fields (bad signature), the body hash intact', async () => {
    const signed = await mailauthSigned(MESSAGE, 'r1', rsaPem);
    const r = await verify(signed.replace('Subject: verify me', 'Subject: verify you'));
    expect(r).toMatchObject([{ result: 'fail', selector: 'r1', reason: 'signature did not verify' }]);
  });

  it('threadPool: the same verdicts with the signatures checked on the thread pool', async () => {
    const signed = await mailauthSigned(await mailauthSigned(MESSAGE, 'r1', rsaPem), 'e1', edPem);
    const pooled = (data: string) => verifyHere(data, { threadPool: true });
    expect((await pooled(signed)).results?.map((x) => [x.selector, x.result])).toEqual([
      ['e1', 'pass'],
      ['r1', 'pass'],
    ]);
    const forged = await pooled(signed.replace('Subject: verify me', 'Subject: verify you'));
    expect(forged.results).toMatchObject([
      { result: 'fail', selector: 'e1', reason: 'signature did not verify' },
      { result: 'fail', selector: 'r1', reason: 'signature did not verify' },
    ]);
    // A signature that is not even well-formed base64 of the right size: a failure, not an exception.
    const garbled = signed.replace(/(DKIM-Signature:[\s\S]*?\bb=)[A-Za-z0-9+/]{8}/, '$1AAAA');
    expect((await pooled(garbled)).results?.map((x) => x.result)).toEqual(['fail', 'pass']);
  });

  it('header canonicalisation: relaxed survives whitespace and case changes in transit, simple does not', async () => {
    const simple = await mailauthSigned(MESSAGE, 'r1', rsaPem, {}, { canonicalization: 'simple/simple' });
    const both = await mailauthSigned(simple, 'e1', edPem, {}, { canonicalization: 'relaxed/relaxed' });
    expect(await verify(both)).toMatchObject([
      { result: 'pass', selector: 'e1' },
      { result: 'pass', selector: 'r1' },
    ]);
    const rewritten = both.replace('Subject: verify me', 'SUBJECT :  verify \t me ');
    expect(await verify(rewritten)).toMatchObject([
      { result: 'pass', selector: 'e1' },
      { result: 'fail', selector: 'r1', reason: 'signature did not verify' },
    ]);
  });

  it('neutral for a signature dated in the future (t=), permerror for an unknown algorithm and a revoked key', async () => {
    const future = await mailauthSigned(MESSAGE, 'r1', rsaPem, {
      signTime: new Date(Date.now() + 86400_000),
    });
    expect(await verify(future)).toMatchObject([
      { result: 'neutral', selector: 'r1', reason: 'signed in the future' },
    ]);
    const signed = await mailauthSigned(MESSAGE, 'r1', rsaPem);
    expect(await verify(signed.replace('a=rsa-sha256', 'a=rsa-sha512'))).toMatchObject([
      { result: 'permerror', algorithm: 'rsa-sha512', reason: 'unknown algorithm rsa-sha512' },
    ]);
    expect(await verify(await mailauthSigned(MESSAGE, 'revoked', rsaPem))).toMatchObject([
      { result: 'permerror', selector: 'revoked', reason: 'key revoked' },
    ]);
  });

  it('checks at most maxSignatures signatures from the top, and logs how many it skipped', async () => {
    let signed = MESSAGE;
    for (const selector of ['r1', 'e1', 'r1'])
      signed = await mailauthSigned(signed, selector, selector === 'e1' ? edPem : rsaPem);
    const lines: { msg: string; skipped?: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    const r = await verifyHere(signed, { maxSignatures: 2 }, pino({ level: 'info' }, sink));
    expect(r.results?.map((x) => [x.selector, x.result])).toEqual([
      ['r1', 'pass'],
      ['e1', 'pass'],
    ]);
    expect(lines.find((l) => /maxSignatures/.test(l.msg))).toMatchObject({ skipped: 1 });
    const all = await verify(signed);
    expect(all).toHaveLength(3);
  });
});

describe('dkim-verify with the key record cached', () => {
  it('verifies each message on its own: the same header fields over another body fail, the key asked for once', async () => {
    const signed = await mailauthSigned(MESSAGE, 'r1', rsaPem);
    const tampered = signed.replace('signed text.', 'changed text.');
    // The same signature, header fields and body hash over a body one octet longer: the header check
    // passes, the body hash does not.
    const longer = signed.replace('signed text.', 'signed text!.');
    const seen: string[] = [];
    const probe = resultsProbe('dkim', (results) => {
      seen.push(results.map((r) => `${r.result}${r.reason ? ` (${r.reason})` : ''}`).join(', '));
    });
    const t = await startTestServer({
      dns: zone,
      plugins: [['dkim-verify', {}], probe, ['rcpt-local', { domains: ['example.net'] }]],
    });
    try {
      const c = await t.connect();
      await c.expect('EHLO client.example', 250);
      for (const data of [signed, tampered, signed, longer, signed]) {
        await c.expect('MAIL FROM:<alice@example.org>', 250);
        await c.expect('RCPT TO:<bob@example.net>', 250);
        await c.expect('DATA', 354);
        expect((await c.sendData(data)).code).toBe(250);
      }
      await c.close();
      expect(seen).toEqual([
        'pass',
        'fail (body hash did not verify)',
        'pass',
        'fail (body hash did not verify)',
        'pass',
      ]);
      // Every message after the first found the key in the resolver's cache.
      expect(t.dns?.count('r1._domainkey.example.org', 'TXT')).toBe(1);
    } finally {
      await t.close();
    }
  });
});

describe('dkim-verify worker threads', () => {
  it('a thread that exits with a message in flight: temperror (451 per the action map), logged; the next message gets a new thread', async () => {
    const lines: { msg: string; lost?: number; dkim?: DkimResult[] }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    let seen: readonly DkimResult[] | undefined;
    const probe = resultsProbe('dkim', (results) => {
      seen = results;
    });
    const actions = { temperror: { action: 'tempfail' } };
    const t = await startTestServer({
      dns: zone,
      plugins: [
        ['dkim-verify', { workers: 1, actions }],
        probe,
        ['rcpt-local', { domains: ['example.net'] }],
      ],
      logger: pino({ level: 'debug' }, sink),
    });
    const pool = poolOf(t);
    try {
      const c = await t.connect();
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<alice@example.org>', 250);
      await c.expect('RCPT TO:<bob@example.net>', 250);
      await c.expect('DATA', 354);
      const replying = c.sendData(await mailauthSigned(MESSAGE, 'slow', rsaPem));
      // The thread has asked for the key (the DNS server never answers): stop it now.
      await vi.waitFor(() => expect(t.dns?.count('slow._domainkey.example.org')).toBeGreaterThan(0));
      expect(pool.inFlight).toBe(1);
      await pool.terminateThread(0);
      const reply = await replying;
      expect([reply.code, reply.enhanced]).toEqual([451, '4.7.20']);
      // The tempfail answered before the probe ran: the result is in the plugin's debug line.
      expect(lines.find((l) => l.msg === 'DKIM verified')?.dkim).toEqual([
        { result: 'temperror', reason: 'verifier thread exited', properties: {} },
      ]);
      expect(lines.find((l) => /verifier thread exited/.test(l.msg))).toMatchObject({ lost: 1 });
      expect(pool.running).toBe(0);

      await c.expect('MAIL FROM:<alice@example.org>', 250);
      await c.expect('RCPT TO:<bob@example.net>', 250);
      await c.expect('DATA', 354);
      expect((await c.sendData(await mailauthSigned(MESSAGE, 'r1', rsaPem))).code).toBe(250);
      expect(seen).toMatchObject([{ result: 'pass', selector: 'r1' }]);
      expect([pool.running, pool.answered]).toEqual([1, 1]);
      await c.close();
    } finally {
      await t.close();
    }
    // Closing the server ended the thread.
    expect(pool.running).toBe(0);
    expect(verifierPools(t.server.facts)).toEqual([]);
  });

  it('a thread asks the event loop for a key once per TTL, the resolver answering from its cache', async () => {
    let now = Date.now();
    const t = await startTestServer({
      dns: zone,
      clock: { now: () => now },
      plugins: [
        ['dkim-verify', { workers: 1 }],
        ['rcpt-local', { domains: ['example.net'] }],
      ],
    });
    const pool = poolOf(t);
    const signed = await mailauthSigned(MESSAGE, 'r1', rsaPem);
    try {
      const c = await t.connect();
      await c.expect('EHLO client.example', 250);
      const send = async () => {
        await c.expect('MAIL FROM:<alice@example.org>', 250);
        await c.expect('RCPT TO:<bob@example.net>', 250);
        await c.expect('DATA', 354);
        expect((await c.sendData(signed)).code).toBe(250);
        return [pool.keyLookups, t.dns?.count('r1._domainkey.example.org', 'TXT')];
      };
      expect(await send()).toEqual([1, 1]);
      expect(await send()).toEqual([1, 1]);
      // Past the record's TTL (the test DNS server's default, 300 s), on the server's clock: both caches expired.
      now += 301_000;
      expect(await send()).toEqual([2, 2]);
      expect(await send()).toEqual([2, 2]);
      expect(pool.answered).toBe(4);
      await c.close();
    } finally {
      await t.close();
    }
  });

  it('threads end when a reload replaces the plugin or drops it', async () => {
    const t = await startTestServer({
      dns: zone,
      plugins: [
        ['dkim-verify', { workers: 2 }],
        ['rcpt-local', { domains: ['example.net'] }],
      ],
    });
    type Config = { plugins: Array<{ plugin: string; config?: Record<string, unknown> }> };
    const first = poolOf(t);
    let second: VerifierPool | undefined;
    try {
      expect(first.running).toBe(2);
      const replaced = structuredClone(t.server.config) as unknown as Config;
      for (const p of replaced.plugins) if (p.plugin === 'dkim-verify') p.config = { workers: 1 };
      const r1 = await t.server.reload({ config: replaced });
      expect(r1.ok && r1.plugins.replaced).toEqual(['dkim-verify']);
      // No session used the old instance: it closes (and its threads end) once the reload is done.
      await vi.waitFor(() => expect(first.running).toBe(0));
      second = poolOf(t);
      expect(second.running).toBe(1);
      const dropped = structuredClone(t.server.config) as unknown as Config;
      dropped.plugins = dropped.plugins.filter((p) => p.plugin !== 'dkim-verify');
      const r2 = await t.server.reload({ config: dropped });
      expect(r2.ok && r2.plugins.removed).toEqual(['dkim-verify']);
      const last = second;
      await vi.waitFor(() => expect(last.running).toBe(0));
    } finally {
      await t.close();
    }
  });

  it('threads that cannot load their module: logged once, then every message is verified on the event loop', async () => {
    const errors: string[] = [];
    const log = pino(
      { level: 'error' },
      new Writable({ write: (c: Buffer, _e, done) => done(void errors.push(JSON.parse(c.toString()).msg)) }),
    );
    const lookup = async () => ({ kind: 'nxdomain', authenticated: false }) as const;
    const settings = { minKeyBits: 1024, maxSignatures: 10, clockSkew: 300 };
    const missing = new URL('../fixtures/no-such-worker.ts', import.meta.url);
    const server = {} as Parameters<typeof verifierPools>[0];
    const pool = new VerifierPool(server, 1, settings, lookup, log, missing);
    try {
      const first = pool.verify(Buffer.from('From: a@example.org\r\n\r\nhi\r\n'), Date.now());
      // Sent before the thread failed: it comes back temperror, never left waiting.
      expect((await first)?.signatures).toEqual([{ result: 'temperror', reason: 'verifier thread exited' }]);
      await vi.waitFor(() => expect(pool.running).toBe(0));
      expect(pool.verify(Buffer.from('From: a@example.org\r\n\r\nhi\r\n'), Date.now())).toBeUndefined();
      expect(pool.running).toBe(0);
      expect(errors.filter((m) => /could not start/.test(m))).toHaveLength(1);
    } finally {
      await pool.close();
    }
  });

  it('running threads do not keep the process alive', async () => {
    // A process that starts a pool, has it verify a message, and never closes it: it must still exit
    // (the threads are unref'd; this fails if a thread keeps the process alive).
    const threads = new URL('../../plugins/dkim-verify/threads.ts', import.meta.url).href;
    const script = `
      import { VerifierPool } from ${JSON.stringify(threads)};
      const log = { error: (...a) => console.error(...a) };
      const lookup = async () => ({ kind: 'nxdomain', authenticated: false });
      const pool = new VerifierPool({}, 1, { minKeyBits: 1024, maxSignatures: 10, clockSkew: 300 }, lookup, log);
      // What keeps a server alive while a message is verified: its sockets (here a timer).
      const hold = setInterval(() => {}, 1000);
      const v = await pool.verify(Buffer.from('From: a@example.org\\r\\n\\r\\nhi\\r\\n'), Date.now());
      clearInterval(hold);
      console.log(JSON.stringify({ verdicts: v.signatures, running: pool.running }));
    `;
    const file = join(dir, 'pool-left-open.mjs');
    await writeFile(file, script);
    const out = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [file], { timeout: 15_000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      );
    });
    expect(JSON.parse(out)).toEqual({ verdicts: [], running: 1 });
  });

  it('the threads end with the server', async () => {
    const t = await startTestServer({
      dns: zone,
      plugins: [
        ['dkim-verify', { workers: 2 }],
        ['rcpt-local', { domains: ['example.net'] }],
      ],
    });
    const pool = poolOf(t);
    try {
      expect(pool.running).toBe(2);
      const c = await t.connect();
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<alice@example.org>', 250);
      await c.expect('RCPT TO:<bob@example.net>', 250);
      await c.expect('DATA', 354);
      expect((await c.sendData(await mailauthSigned(MESSAGE, 'e1', edPem))).code).toBe(250);
      expect(pool.answered).toBe(1);
      await c.close();
    } finally {
      await t.close();
    }
    expect(pool.running).toBe(0);
  });
});
