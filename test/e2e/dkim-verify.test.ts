/**
 * The `dkim-verify` plugin against keys published by a test DNS server on
 * loopback: every result value, several signatures on one message, a message
 * spilled to disk, and messages signed by an independent implementation
 * (Debian's python3-dkim) for RSA-2048 and Ed25519.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import pino, { type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpReply, TestDnsZone } from '../../core/testkit.ts';
import { startTestServer } from '../../core/testkit.ts';
import { dkimRecord } from '../../plugins/dkim-sign/keys.ts';
import type { DkimResult } from '../../plugins/dkim-verify/index.ts';
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

/** Send `data` through a server with dkim-verify; the results it recorded. */
async function verify(data: string): Promise<readonly DkimResult[] | undefined> {
  return (await verifyWith(data, {})).results;
}

/** Send `data` through a server with dkim-verify configured with `config`: the reply to the message and the results. */
async function verifyWith(
  data: string,
  config: Record<string, unknown>,
  logger?: Logger,
): Promise<{ reply: SmtpReply; results: readonly DkimResult[] | undefined }> {
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
    return { reply, results: seen };
  } finally {
    await t.close();
  }
}

describe('dkim-verify', () => {
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

  it('verifies a message that spilled to disk (streamed from the spool file)', async () => {
    const big = MESSAGE + `${'y'.repeat(76)}\r\n`.repeat(8000);
    const r = await verify(await pythonSigned(big, 'r1', 'rsa.pem', 'rsa'));
    expect(r?.[0]?.result).toBe('pass');
  });

  it('the actions map decides on the best signature: fail refused with 550 5.7.20 unless another passes, temperror 451', async () => {
    const actions = { actions: { fail: { action: 'reject' }, temperror: { action: 'tempfail' } } };
    const one = await mailauthSigned(MESSAGE, 'r1', rsaPem);
    const failed = await verifyWith(one.replace('signed text.', 'changed text.'), actions);
    expect([failed.reply.code, failed.reply.enhanced]).toEqual([550, '5.7.20']);
    // A failing signature next to a passing one: the message has a valid signature and is accepted.
    const mixed = await mailauthSigned(await mailauthSigned(MESSAGE, 'gone', rsaPem), 'r1', rsaPem);
    const ok = await verifyWith(mixed, actions);
    expect(ok.results?.map((x) => x.result)).toEqual(['pass', 'permerror']);
    expect(ok.reply.code).toBe(250);
    const down = await verifyWith(await mailauthSigned(MESSAGE, 'down', rsaPem), actions);
    expect([down.reply.code, down.reply.enhanced]).toEqual([451, '4.7.20']);
    expect((await verifyWith(one, actions)).reply.code).toBe(250);
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
    const pooled = (data: string) => verifyWith(data, { threadPool: true });
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
    const r = await verifyWith(signed, { maxSignatures: 2 }, pino({ level: 'info' }, sink));
    expect(r.results?.map((x) => [x.selector, x.result])).toEqual([
      ['r1', 'pass'],
      ['e1', 'pass'],
    ]);
    expect(lines.find((l) => /maxSignatures/.test(l.msg))).toMatchObject({ skipped: 1 });
    const all = await verify(signed);
    expect(all).toHaveLength(3);
  });
});
