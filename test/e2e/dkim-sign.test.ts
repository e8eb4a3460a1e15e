/**
 * The `dkim-sign` plugin: who gets signed, with RSA-2048 and Ed25519 keys side
 * by side (RFC 8463), body hashed from the spool (also when the message
 * spilled to disk); every signature is checked by an independent
 * implementation, Debian's python3-dkim, installed by the test when missing.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CapturedMessage, TestPlugin } from '../../core/testkit.ts';
import { startTestServer } from '../../core/testkit.ts';
import { type DkimKeyPair, generateDkimKeyPair } from '../../plugins/dkim-sign/keys.ts';
import { ensurePythonDkim, interop } from '../helpers/python-dkim.ts';
import { loggedInAs } from '../helpers/test-plugins.ts';

let dir: string;
let rsa: DkimKeyPair;
let ed: DkimKeyPair;
/** The TXT records python3-dkim is given, by DNS name. */
let records: Record<string, string>;

beforeAll(async () => {
  await ensurePythonDkim();
  dir = await mkdtemp(join(tmpdir(), 'mailframe-dkim-'));
  [rsa, ed] = await Promise.all([generateDkimKeyPair('rsa'), generateDkimKeyPair('ed25519')]);
  await writeFile(join(dir, 'rsa.pem'), rsa.privateKeyPem);
  await writeFile(join(dir, 'ed.pem'), ed.privateKeyPem);
  records = {
    'r1._domainkey.example.org': rsa.record,
    'e1._domainkey.example.org': ed.record,
    'r1._domainkey.relay.example': rsa.record,
  };
}, 300_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const loggedIn = loggedInAs('alice');

function signer(
  selectors?: readonly { selector: string; keyFile: string }[],
  extra: Record<string, unknown> = {},
): TestPlugin {
  return [
    'dkim-sign',
    {
      ...extra,
      domains: [
        {
          domain: 'example.org',
          selectors: selectors ?? [
            { selector: 'r1', keyFile: join(dir, 'rsa.pem') },
            { selector: 'e1', keyFile: join(dir, 'ed.pem') },
          ],
        },
        {
          domain: 'relay.example',
          selectors: [{ selector: 'r1', keyFile: join(dir, 'rsa.pem') }],
          signUnauthenticated: true,
        },
      ],
    },
  ];
}

function messageFrom(from: string, body = 'Hello,\r\n\r\nthis is signed.\r\n'): string {
  return [
    `From: Alice <${from}>`,
    'To: bob@example.net',
    'Subject: DKIM test',
    'Date: Fri, 04 Dec 2026 07:00:00 +0000',
    `Message-ID: <${Math.random().toString(36).slice(2)}@example.org>`,
    '',
    body,
  ].join('\r\n');
}

async function send(
  plugins: readonly TestPlugin[],
  mailFrom: string,
  data: string,
  sign: TestPlugin = signer(),
): Promise<CapturedMessage> {
  const t = await startTestServer({
    plugins: [...plugins, sign, ['rcpt-local', { domains: ['example.net'] }]],
  });
  try {
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect(`MAIL FROM:<${mailFrom}>`, 250);
    await c.expect('RCPT TO:<bob@example.net>', 250);
    await c.expect('DATA', 354);
    const r = await c.sendData(data);
    expect(r.code).toBe(250);
    await c.close();
    const [m] = await t.waitForMessages(1);
    if (!m) throw new Error('nothing queued');
    return m;
  } finally {
    await t.close();
  }
}

const signatures = (m: CapturedMessage) => m.text.match(/^DKIM-Signature:/gim) ?? [];
const tags = (m: CapturedMessage, tag: string) =>
  [
    ...m.text.matchAll(
      new RegExp(`^DKIM-Signature:(?:[^\\r]|\\r\\n(?=[ \\t]))*?[; \\t]${tag}=([^;\\s]+)`, 'gim'),
    ),
  ].map((x) => x[1]);

describe('dkim-sign', () => {
  it("signs an authenticated session's mail with every selector of the From domain, and python3-dkim verifies both", async () => {
    const m = await send([loggedIn], 'alice@example.org', messageFrom('alice@example.org'));
    expect(signatures(m)).toHaveLength(2);
    expect(tags(m, 'a').sort()).toEqual(['ed25519-sha256', 'rsa-sha256']);
    expect(tags(m, 's').sort()).toEqual(['e1', 'r1']);
    // Above the Received field the core prepended.
    expect(m.text.startsWith('DKIM-Signature:')).toBe(true);
    const v = await interop(['verify', JSON.stringify(records)], m.data);
    expect(v.stdout).toContain('signatures=2 ok=True');
    expect(v.code).toBe(0);
  });

  it('python3-dkim verifies an RSA-2048 and an Ed25519 signature each on its own', async () => {
    for (const [selector, file, record] of [
      ['r1', 'rsa.pem', rsa.record],
      ['e1', 'ed.pem', ed.record],
    ] as const) {
      const only = signer([{ selector, keyFile: join(dir, file) }]);
      const m = await send([loggedIn], 'alice@example.org', messageFrom('alice@example.org'), only);
      expect(tags(m, 's')).toEqual([selector]);
      const v = await interop(
        ['verify', JSON.stringify({ [`${selector}._domainkey.example.org`]: record })],
        m.data,
      );
      expect(v.stdout).toContain('signatures=1 ok=True');
    }
  });

  it('a changed body no longer verifies (the check is real)', async () => {
    const m = await send([loggedIn], 'alice@example.org', messageFrom('alice@example.org'));
    const tampered = m.text.replace('this is signed.', 'this is changed.');
    const v = await interop(['verify', JSON.stringify(records)], tampered);
    expect(v.code).toBe(1);
  });

  it('does not sign an unauthenticated session for a domain that only signs authenticated mail', async () => {
    const m = await send([], 'alice@example.org', messageFrom('alice@example.org'));
    expect(signatures(m)).toHaveLength(0);
  });

  it('signs unauthenticated mail of a domain with signUnauthenticated, found by From or else MAIL FROM', async () => {
    const byFrom = await send([], 'bounce@other.example', messageFrom('news@relay.example'));
    expect(tags(byFrom, 'd')).toEqual(['relay.example']);
    const byEnvelope = await send([], 'bounce@relay.example', messageFrom('news@unknown.example'));
    expect(tags(byEnvelope, 'd')).toEqual(['relay.example']);
    for (const m of [byFrom, byEnvelope]) {
      expect((await interop(['verify', JSON.stringify(records)], m.data)).code).toBe(0);
    }
  });

  it('signs a message that spilled to disk (body hashed from the spool file)', async () => {
    const line = `${'x'.repeat(76)}\r\n`;
    const body = line.repeat(8000); // ~600 KiB, over the 256 KiB kept in memory
    const m = await send([loggedIn], 'alice@example.org', messageFrom('alice@example.org', body));
    expect(signatures(m)).toHaveLength(2);
    const v = await interop(['verify', JSON.stringify(records)], m.data);
    expect(v.stdout).toContain('signatures=2 ok=True');
  });

  it('oversigns: a Subject added above the signed one breaks the signature, and does not when oversigning is off', async () => {
    const only = [{ selector: 'r1', keyFile: join(dir, 'rsa.pem') }];
    const added = (m: CapturedMessage) =>
      m.text.replace(/\r\nSubject:/i, '\r\nSubject: added later\r\nSubject:');
    const over = await send([loggedIn], 'alice@example.org', messageFrom('alice@example.org'), signer(only));
    // One Subject in the message, listed twice in h=; From (also oversigned) twice; Cc (absent) once.
    const h = (tags(over, 'h')[0] ?? '').split(':');
    expect(h.filter((n) => n === 'subject')).toHaveLength(2);
    expect(h.filter((n) => n === 'from')).toHaveLength(2);
    expect(h.filter((n) => n === 'cc')).toHaveLength(1);
    expect((await interop(['verify', JSON.stringify(records)], over.data)).code).toBe(0);
    expect((await interop(['verify', JSON.stringify(records)], added(over))).code).toBe(1);

    const plain = await send(
      [loggedIn],
      'alice@example.org',
      messageFrom('alice@example.org'),
      signer(only, { oversign: [], headers: ['from', 'subject', 'date'] }),
    );
    expect(tags(plain, 'h')).toEqual(['from:subject:date']);
    expect((await interop(['verify', JSON.stringify(records)], added(plain))).code).toBe(0);
  });

  it('always signs From (RFC 6376 5.4), even when `headers` leaves it out or the message has none', async () => {
    const only = [{ selector: 'r1', keyFile: join(dir, 'rsa.pem') }];
    const m = await send(
      [loggedIn],
      'alice@example.org',
      messageFrom('alice@example.org'),
      signer(only, { oversign: [], headers: ['subject', 'date'] }),
    );
    expect(tags(m, 'h')).toEqual(['from:subject:date']);
    expect((await interop(['verify', JSON.stringify(records)], m.data)).code).toBe(0);
    // No From field at all (signed for the MAIL FROM domain): From is still named, so one added later breaks it.
    const noFrom = messageFrom('alice@example.org').replace(/^From: [^\r]*\r\n/, '');
    const n = await send(
      [loggedIn],
      'alice@example.org',
      noFrom,
      signer(only, { oversign: [], headers: ['subject'] }),
    );
    expect(tags(n, 'h')).toEqual(['from:subject']);
  });

  it('every canonicalisation verifies in python3-dkim, with trailing whitespace, tabs and empty lines in the body', async () => {
    const body = 'a  line \t with\t\tspaces   \r\n\r\n \r\nlast line\t\r\n\r\n\r\n';
    for (const c of ['relaxed/relaxed', 'relaxed/simple', 'simple/relaxed', 'simple/simple']) {
      const m = await send(
        [loggedIn],
        'alice@example.org',
        messageFrom('alice@example.org', body),
        signer(undefined, { canonicalization: c }),
      );
      expect(tags(m, 'c')).toEqual([c, c]);
      const v = await interop(['verify', JSON.stringify(records)], m.data);
      expect(v.stdout, c).toContain('signatures=2 ok=True');
    }
  });

  it('an empty body verifies in python3-dkim (simple and relaxed)', async () => {
    for (const c of ['simple/simple', 'relaxed/relaxed']) {
      const m = await send(
        [loggedIn],
        'alice@example.org',
        messageFrom('alice@example.org', ''),
        signer(undefined, { canonicalization: c }),
      );
      expect((await interop(['verify', JSON.stringify(records)], m.data)).stdout, c).toContain('ok=True');
    }
  });
});
