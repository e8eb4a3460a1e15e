/**
 * `mailframe dkim keygen`: the key it writes signs with `dkim-sign`, and the
 * TXT record it prints verifies that signature in python3-dkim.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDkimCli } from '../../bin/dkim-cli.ts';
import { startTestServer } from '../../core/testkit.ts';
import { ensurePythonDkim, interop } from '../helpers/python-dkim.ts';
import { loggedInAs } from '../helpers/test-plugins.ts';

let dir: string;
beforeAll(async () => {
  await ensurePythonDkim();
  dir = await mkdtemp(join(tmpdir(), 'mailframe-keygen-'));
}, 300_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runDkimCli(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

/** The TXT value from the printed zone line: its quoted strings joined. */
function recordOf(out: string): string {
  const line = out.split('\n').find((l) => l.includes(' IN TXT '));
  return [...(line ?? '').matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
}

const loggedIn = loggedInAs('alice');

describe('mailframe dkim keygen', () => {
  for (const type of ['rsa', 'ed25519'] as const) {
    it(`writes a ${type} key dkim-sign signs with, and prints the record that verifies it`, async () => {
      const selector = `k${type}`;
      const r = await cli([
        'keygen',
        '--domain',
        'example.org',
        '--selector',
        selector,
        '--type',
        type,
        '--out',
        dir,
      ]);
      expect(r.code).toBe(0);
      const keyFile = join(dir, `${selector}._domainkey.example.org.pem`);
      expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
      expect(r.out).toContain(`${selector}._domainkey.example.org. IN TXT (`);
      const record = recordOf(r.out);
      expect(record).toMatch(new RegExp(`^v=DKIM1; k=${type}; p=[A-Za-z0-9+/=]+$`));
      if (type === 'rsa') expect((await readFile(keyFile, 'utf8')).length).toBeGreaterThan(1500); // 2048 bits

      const t = await startTestServer({
        plugins: [
          loggedIn,
          ['dkim-sign', { domains: [{ domain: 'example.org', selectors: [{ selector, keyFile }] }] }],
          ['rcpt-local', { domains: ['example.net'] }],
        ],
      });
      try {
        const c = await t.connect();
        await c.expect('EHLO client.example', 250);
        await c.expect('MAIL FROM:<alice@example.org>', 250);
        await c.expect('RCPT TO:<bob@example.net>', 250);
        await c.expect('DATA', 354);
        expect(
          (await c.sendData('From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nbody\r\n'))
            .code,
        ).toBe(250);
        await c.close();
        const [m] = await t.waitForMessages(1);
        const v = await interop(
          ['verify', JSON.stringify({ [`${selector}._domainkey.example.org`]: record })],
          m?.data ?? '',
        );
        expect(v.stdout).toContain('signatures=1 ok=True');
      } finally {
        await t.close();
      }
    });
  }

  it('refuses to overwrite a key, an unknown type and a bad selector', async () => {
    const args = ['keygen', '--domain', 'example.org', '--selector', 'once', '--out', dir];
    expect((await cli(args)).code).toBe(0);
    const again = await cli(args);
    expect(again.code).toBe(1);
    expect(again.err).toContain('cannot write');
    expect((await cli(['keygen', '--domain', 'example.org', '--selector', 's', '--type', 'dsa'])).code).toBe(
      2,
    );
    expect((await cli(['keygen', '--domain', 'example.org', '--selector', 'a b'])).code).toBe(2);
    expect((await cli(['keygen', '--domain', 'example.org'])).code).toBe(2);
  });
});
