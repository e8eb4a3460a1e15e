/**
 * The `arc` plugin (RFC 8617) against keys published by a test DNS server on
 * loopback: chains sealed in the test by mailauth verify (`pass`), a body
 * changed after sealing does not (`fail`), a message without ARC sets is
 * `none`; and the plugin's own seal (i=1 on a fresh message, i=n+1 on a
 * chained one) verifies with mailauth's verifier.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ARCData } from 'mailauth';
import { sealMessage, arc as verifyArc } from 'mailauth/lib/arc/index.js';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpReply, TestDnsZone } from '../../core/testkit.ts';
import { startTestServer } from '../../core/testkit.ts';
import type { ArcResult } from '../../plugins/arc/index.ts';
import { dkimRecord } from '../../plugins/dkim-sign/keys.ts';
import type { DkimResult } from '../../plugins/dkim-verify/index.ts';
import { resultsProbe } from '../helpers/test-plugins.ts';

let dir: string;
let forwarderPem: string;
let zone: TestDnsZone;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailframe-arc-'));
  const forwarder = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ours = generateKeyPairSync('ed25519');
  forwarderPem = forwarder.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  await writeFile(join(dir, 'seal.pem'), ours.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  zone = {
    'fw._domainkey.forwarder.example': { TXT: [dkimRecord('rsa', forwarder.publicKey)] },
    'arc1._domainkey.mx.test.example': { TXT: [dkimRecord('ed25519', ours.publicKey)] },
    'pass.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
  };
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const MESSAGE = [
  'From: Alice <alice@pass.example>',
  'To: bob@example.net',
  'Subject: forwarded',
  'Date: Fri, 04 Dec 2026 07:00:00 +0000',
  'Message-ID: <arc1@pass.example>',
  '',
  'Hello Bob,',
  '',
  'this went through a list.',
  '',
].join('\r\n');

/** `message` with the next ARC set of forwarder.example, made by mailauth. */
async function forwarderSealed(message: string, cv: 'none' | 'pass'): Promise<string> {
  const set = await sealMessage(message, {
    signingDomain: 'forwarder.example',
    selector: 'fw',
    privateKey: forwarderPem,
    cv,
    authResults: 'forwarder.example; spf=pass smtp.mailfrom=alice@pass.example',
  });
  expect(set.length).toBeGreaterThan(0);
  return set.toString() + message;
}

/** mailauth's resolver over the test zone (TXT only: the ARC keys). */
async function zoneResolver(name: string, rrtype: string): Promise<string[][]> {
  const txt = rrtype === 'TXT' ? zone[name]?.TXT : undefined;
  if (!txt) throw Object.assign(new Error(`no ${rrtype} for ${name}`), { code: 'ENOTFOUND' });
  return txt.map((t) => [typeof t === 'string' ? t : t.join('')]);
}

/** The chain as mailauth's own verifier sees it. */
async function mailauthArc(text: string): Promise<{ result: string; i: number | false }> {
  const verified = await dkimVerify(Buffer.from(text), { resolver: zoneResolver });
  const out = await verifyArc((verified.arc ?? { chain: [] }) as ARCData, { resolver: zoneResolver });
  return { result: out.status.result, i: out.i };
}

/** Send `data` through a server with `arc` (and spf, auth-results): the reply, the results and the stored text. */
async function deliver(
  data: string,
  config: Record<string, unknown> = {},
  authResults: Record<string, unknown> = {},
): Promise<{ reply: SmtpReply; results: readonly ArcResult[]; text: string }> {
  let seen: readonly ArcResult[] = [];
  const probe = resultsProbe('arc', (results) => {
    seen = results;
  });
  const t = await startTestServer({
    dns: zone,
    plugins: [
      'spf',
      ['arc', config],
      probe,
      ['auth-results', authResults],
      ['rcpt-local', { domains: ['example.net'] }],
    ],
  });
  try {
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<alice@pass.example>', 250);
    await c.expect('RCPT TO:<bob@example.net>', 250);
    await c.expect('DATA', 354);
    const reply = await c.sendData(data);
    await c.close();
    const text = reply.code === 250 ? ((await t.waitForMessages(1))[0]?.text ?? '') : '';
    return { reply, results: seen, text };
  } finally {
    await t.close();
  }
}

const SEAL = { seal: { domain: 'mx.test.example', selector: 'arc1', keyFile: '' } };
const sealConfig = () => ({ seal: { ...SEAL.seal, keyFile: join(dir, 'seal.pem') } });

describe('arc: verify', () => {
  it('records none for a message without ARC sets, shown in Authentication-Results', async () => {
    const r = await deliver(MESSAGE);
    expect(r.reply.code).toBe(250);
    expect(r.results).toEqual([
      { result: 'none', instance: 0, sealers: [], properties: { 'smtp.remote-ip': '127.0.0.1' } },
    ]);
    expect(r.text).toMatch(
      /^Authentication-Results: mx\.test\.example;\r\n(?:\t.*\r\n)*\tarc=none smtp\.remote-ip=127\.0\.0\.1/m,
    );
  });

  it('passes a chain sealed by mailauth (one set, then two)', async () => {
    const one = await forwarderSealed(MESSAGE, 'none');
    expect((await deliver(one)).results).toEqual([
      {
        result: 'pass',
        instance: 1,
        sealers: ['forwarder.example'],
        properties: { 'smtp.remote-ip': '127.0.0.1' },
      },
    ]);
    const two = await forwarderSealed(one, 'pass');
    const r = await deliver(two);
    expect(r.results[0]?.result).toBe('pass');
    expect(r.results[0]?.instance).toBe(2);
    expect(r.results[0]?.sealers).toEqual(['forwarder.example', 'forwarder.example']);
    expect(r.text).toContain('arc=pass smtp.remote-ip=127.0.0.1');
  });

  it('fails a chain whose body was changed after sealing', async () => {
    const sealed = await forwarderSealed(MESSAGE, 'none');
    const r = await deliver(sealed.replace('through a list', 'through a thief'));
    expect(r.reply.code).toBe(250); // no refusal by default
    expect(r.results).toHaveLength(1);
    expect(r.results[0]?.result).toBe('fail');
    expect(r.results[0]?.reason).toBeDefined();
    expect(r.text).toMatch(/arc=fail reason="[^"]+" smtp\.remote-ip=127\.0\.0\.1/);
  });

  it('leaves DKIM-Signature fields to dkim-verify: their keys are looked up once, by it (no second DKIM pass)', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const data = { signingDomain: 'pass.example', selector: 'dk1', privateKey: key };
    const signed = await dkimSign(MESSAGE, { ...data, signatureData: [data] });
    expect(signed.errors).toEqual([]);
    const sealed = await forwarderSealed(signed.signatures + MESSAGE, 'none');
    let arcSeen: readonly ArcResult[] = [];
    let dkimSeen: readonly DkimResult[] = [];
    const t = await startTestServer({
      dns: { ...zone, 'dk1._domainkey.pass.example': { TXT: [dkimRecord('ed25519', publicKey)] } },
      // No answer cache: every lookup reaches the DNS server and is counted.
      config: { dns: { cacheSize: 0 } },
      plugins: [
        'dkim-verify',
        'arc',
        resultsProbe('arc', (r) => {
          arcSeen = r;
        }),
        resultsProbe('dkim', (r) => {
          dkimSeen = r;
        }),
        ['rcpt-local', { domains: ['example.net'] }],
      ],
    });
    try {
      const c = await t.connect();
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<alice@pass.example>', 250);
      await c.expect('RCPT TO:<bob@example.net>', 250);
      await c.expect('DATA', 354);
      expect((await c.sendData(sealed)).code).toBe(250);
      await c.close();
      expect(arcSeen).toMatchObject([{ result: 'pass', instance: 1 }]);
      expect(dkimSeen).toMatchObject([{ result: 'pass', selector: 'dk1' }]);
      expect(t.dns?.count('dk1._domainkey.pass.example', 'TXT')).toBe(1);
    } finally {
      await t.close();
    }
  });

  it('refuses a failing chain when the actions say so', async () => {
    const sealed = await forwarderSealed(MESSAGE, 'none');
    const r = await deliver(sealed.replace('through a list', 'through a thief'), {
      actions: { fail: { action: 'reject' } },
    });
    expect(r.reply.code).toBe(550);
    expect(r.reply.enhanced).toBe('5.7.29');
  });
});

describe('arc: seal', () => {
  it('adds i=1 to a fresh message, verified by mailauth, with our results in ARC-Authentication-Results', async () => {
    const r = await deliver(MESSAGE, sealConfig());
    expect(r.reply.code).toBe(250);
    expect(r.text).toMatch(/^ARC-Seal: i=1; .*cv=none/m);
    expect(r.text).toMatch(/^ARC-Message-Signature: i=1; /m);
    expect(r.text).toContain(
      'ARC-Authentication-Results: i=1; mx.test.example;\r\n' +
        '\tspf=pass reason="mx.test.example: domain of alice@pass.example designates 127.0.0.1 as permitted sender" smtp.mailfrom=alice@pass.example;\r\n' +
        '\tarc=none smtp.remote-ip=127.0.0.1\r\n',
    );
    expect(await mailauthArc(r.text)).toEqual({ result: 'pass', i: 1 });
    // The same clauses as our Authentication-Results field.
    const clauses = (field: RegExp) => field.exec(r.text)?.[1];
    const aar = clauses(/^ARC-Authentication-Results: i=1; mx\.test\.example;((?:\r\n\t.*)+)/m);
    expect(aar).toBeDefined();
    expect(clauses(/^Authentication-Results: mx\.test\.example;((?:\r\n\t.*)+)/m)).toBe(aar);
  });

  it('names the server with auth-results’ authserv-id: one setting for both fields', async () => {
    const r = await deliver(MESSAGE, sealConfig(), { authservId: 'auth.example' });
    expect(r.text).toMatch(/^ARC-Authentication-Results: i=1; auth\.example;\r\n\tspf=pass /m);
    expect(r.text).toMatch(/^Authentication-Results: auth\.example;\r\n\tspf=pass /m);
    expect(await mailauthArc(r.text)).toEqual({ result: 'pass', i: 1 });
  });

  it('adds i=n+1 with cv=pass to a message with a valid chain', async () => {
    const two = await forwarderSealed(await forwarderSealed(MESSAGE, 'none'), 'pass');
    const r = await deliver(two, sealConfig());
    expect(r.text).toMatch(/^ARC-Seal: i=3; .*cv=pass/m);
    expect(r.text).toContain('ARC-Authentication-Results: i=3; mx.test.example;\r\n\tspf=pass ');
    expect(await mailauthArc(r.text)).toEqual({ result: 'pass', i: 3 });
  });

  it('verifies and seals a message that spilled to disk (streamed from the spool file)', async () => {
    const big = await forwarderSealed(MESSAGE + `${'y'.repeat(76)}\r\n`.repeat(8000), 'none');
    const r = await deliver(big, sealConfig());
    expect(r.results[0]?.result).toBe('pass');
    expect(r.text).toMatch(/^ARC-Seal: i=2; .*cv=pass/m);
    expect(await mailauthArc(r.text)).toEqual({ result: 'pass', i: 2 });
  });

  it('seals a broken chain with cv=fail, which then fails for the next verifier', async () => {
    const sealed = await forwarderSealed(MESSAGE, 'none');
    const r = await deliver(sealed.replace('through a list', 'through a thief'), sealConfig());
    expect(r.text).toMatch(/^ARC-Seal: i=2; .*cv=fail/m);
    expect((await mailauthArc(r.text)).result).toBe('fail');
  });
});
