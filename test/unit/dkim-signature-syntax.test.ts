/**
 * The verifier's reading of a DKIM-Signature field's tag list (RFC 6376 3.2,
 * 3.5): FWS around names, `=` and `;`, folded base64, duplicate tags, empty
 * values, a spec without `=`, tag-name case, `l=`/`t=`/`x=` syntax. Each
 * field is written by hand and signed with Ed25519 over exactly its own
 * octets (b= deleted), the key served by a DNS server on loopback, so a
 * well-formed field verifies and only its syntax decides the verdict.
 */
import { createPrivateKey, hash, type KeyObject, sign } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../../core/testkit-dns.ts';
import { canonField, parseFields, signedHeaderData } from '../../plugins/dkim/canon.ts';
import type { SignatureVerdict } from '../../plugins/dkim/verify.ts';
import { generateDkimKeyPair } from '../../plugins/dkim-sign/keys.ts';
import { hashBody } from '../../plugins/dkim-sign/signer.ts';
import { ownVerify } from '../helpers/own-dkim.ts';

const HEADER = 'From: a@example.org\r\nTo: b@example.com\r\nSubject: tags\r\n';
const BODY = 'Hello\r\n';
const NOW = Date.UTC(2026, 11, 4) / 1000;
const clock = { now: () => NOW * 1000 };

let dns: TestDnsServer;
let key: KeyObject;
let bh: string;

beforeAll(async () => {
  const pair = await generateDkimKeyPair('ed25519');
  key = createPrivateKey(pair.privateKeyPem);
  dns = await startTestDnsServer({ 'sel._domainkey.example.org': { TXT: [pair.record], ttl: 60 } });
  const { Readable } = await import('node:stream');
  bh = await hashBody(Readable.from([Buffer.from(`${HEADER}\r\n${BODY}`, 'latin1')]), 'relaxed');
});

afterAll(async () => {
  await dns?.close();
});

/**
 * The verdict for a message signed with `template`: `{bh}` is the body hash,
 * `{b}` the signature (where b='s value goes); `fold` splits the base64 of
 * both with FWS as a signer may.
 */
async function verdict(template: string, fold?: string): Promise<SignatureVerdict | undefined> {
  const head = template.replaceAll(
    '{bh}',
    fold === undefined ? bh : `${bh.slice(0, 20)}${fold}${bh.slice(20)}`,
  );
  const unsigned = head.replace('{b}', '');
  const data = signedHeaderData(parseFields(HEADER), ['from', 'to', 'subject'], 'relaxed');
  const octets = Buffer.from(data + canonField(unsigned, 'relaxed'), 'latin1');
  let b = sign(null, hash('sha256', octets, 'buffer'), key).toString('base64');
  if (fold !== undefined) b = `${b.slice(0, 30)}${fold}${b.slice(30, 60)}${fold}${b.slice(60)}`;
  const message = Buffer.from(`${head.replace('{b}', b)}\r\n${HEADER}\r\n${BODY}`, 'latin1');
  const out = await ownVerify(message, dns, clock);
  return out.signatures[0];
}

const TAGS = 'a=ed25519-sha256; c=relaxed/relaxed; d=example.org; s=sel; h=from:to:subject; bh={bh}';
const field = (tags: string) => `DKIM-Signature: ${tags}`;

describe('DKIM-Signature tag list', () => {
  it('passes a plain field (the baseline of the cases below)', async () => {
    expect(await verdict(field(`v=1; ${TAGS}; b={b}`))).toMatchObject({ result: 'pass' });
  });

  it('allows FWS around names, "=" and ";", folded lines included', async () => {
    const spaced =
      'v =\t1 ;\r\n\ta = ed25519-sha256;c=relaxed/relaxed ;d= example.org; s =sel;\r\n' +
      ' h=from:to:subject; bh\r\n\t=\r\n\t{bh} ;\r\n\tb =\r\n\t{b}';
    expect(await verdict(field(spaced))).toMatchObject({
      result: 'pass',
      domain: 'example.org',
      selector: 'sel',
    });
  });

  it('allows FWS inside base64 b= and bh= (folded) and a final ";"', async () => {
    expect(await verdict(field(`v=1; ${TAGS}; b={b};`), '\r\n\t ')).toMatchObject({ result: 'pass' });
    expect(await verdict(field(`v=1; ${TAGS}; b={b}; `), ' \t')).toMatchObject({ result: 'pass' });
  });

  it('ignores unknown tags, with empty values too', async () => {
    expect(await verdict(field(`v=1; ${TAGS}; z=; x_y2=what ever; b={b}`))).toMatchObject({ result: 'pass' });
  });

  it('permerror for a tag named twice, known or not', async () => {
    for (const twice of [
      `v=1; ${TAGS}; s=sel; b={b}`,
      `v=1; ${TAGS}; z=1; z=1; b={b}`,
      `v=1; v=1; ${TAGS}; b={b}`,
    ])
      expect(await verdict(field(twice))).toEqual({ result: 'permerror', reason: 'malformed signature' });
  });

  it('permerror for a spec without "=", an empty one, or a tag name that is not one', async () => {
    for (const bad of [
      `v=1; ${TAGS}; z; b={b}`,
      `v=1; ${TAGS};; b={b}`,
      `v=1; ${TAGS}; 2z=1; b={b}`,
      `v=1; ${TAGS}; z-y=1; b={b}`,
      `v=1; ${TAGS}; =1; b={b}`,
    ])
      expect(await verdict(field(bad))).toEqual({ result: 'permerror', reason: 'malformed signature' });
  });

  it('tag names are case-sensitive: V= is not v=, B= is not b=', async () => {
    expect(await verdict(field(`V=1; ${TAGS}; b={b}`))).toMatchObject({
      result: 'permerror',
      reason: 'incompatible version',
    });
    expect(await verdict(field(`v=1; ${TAGS}; B={b}`))).toMatchObject({
      result: 'permerror',
      reason: 'missing required tag',
    });
  });

  it('an empty required value is missing; an empty i= is not within d=', async () => {
    expect(await verdict(field(`v=1; ${TAGS}; b=`))).toMatchObject({ reason: 'missing required tag' });
    expect(await verdict(field(`v=1; ${TAGS}; b=\r\n\t`))).toMatchObject({ reason: 'missing required tag' });
    expect(await verdict(field(`v=1; ${TAGS}; i=; b={b}`))).toMatchObject({ reason: 'i= not within d=' });
  });

  it('l=, t= and x= are digits, x= not before t=', async () => {
    expect(await verdict(field(`v=1; ${TAGS}; l=1x; b={b}`))).toMatchObject({ reason: 'malformed l= or t=' });
    expect(await verdict(field(`v=1; ${TAGS}; t=-1; b={b}`))).toMatchObject({ reason: 'malformed l= or t=' });
    expect(await verdict(field(`v=1; ${TAGS}; t=${NOW}; x=${NOW - 1}; b={b}`))).toMatchObject({
      reason: 'malformed x=',
    });
    expect(await verdict(field(`v=1; ${TAGS}; t=${NOW}; x=${NOW + 60}; b={b}`))).toMatchObject({
      result: 'pass',
    });
    expect(await verdict(field(`v=1; ${TAGS}; l = 7 ; b={b}`))).toMatchObject({
      result: 'pass',
      bodyLength: 7,
    });
  });

  it('c= names the canonicalisations in any case; an unknown one is a permerror', async () => {
    const upper = `v=1; a=ed25519-sha256; c=Relaxed/RELAXED; d=example.org; s=sel; h=from:to:subject; bh={bh}; b={b}`;
    expect(await verdict(field(upper))).toMatchObject({ result: 'pass' });
    expect(
      await verdict(field(`v=1; ${TAGS.replace('relaxed/relaxed', 'relaxed/nofws')}; b={b}`)),
    ).toMatchObject({ reason: 'unknown canonicalization' });
  });
});
