import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MailServer } from 'mailframe';
import { connectClient, startTestServer, type TestServer } from 'mailframe/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import blockSenderDomains from './index.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

let t: TestServer | undefined;
let server: MailServer | undefined;
let dataDir: string | undefined;
afterEach(async () => {
  await t?.close();
  await server?.close(0);
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  t = undefined;
  server = undefined;
  dataDir = undefined;
});

describe('block-sender-domains example', () => {
  it('refuses senders at a listed domain with 550 5.7.1 and lets others through', async () => {
    t = await startTestServer({
      plugins: [
        [blockSenderDomains, { domains: ['Spam.Example'] }],
        ['rcpt-local', { domains: ['example.com'] }],
      ],
    });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<eve@spam.example>', 550, '5.7.1');
    await c.expect('MAIL FROM:<eve@SPAM.EXAMPLE>', 550, '5.7.1');
    // A refused MAIL opens no transaction.
    await c.expect('RCPT TO:<bob@example.com>', 503, '5.5.1');

    await c.expect('MAIL FROM:<alice@sub.spam.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: hi\r\n\r\nhello\r\n')).code).toBe(250);

    await c.expect('MAIL FROM:<>', 250, '2.1.0');
    await c.expect('RSET', 250);
    await c.expect('QUIT', 221);

    const [m] = await t.waitForMessages(1);
    expect(m?.from).toBe('alice@sub.spam.example');
    expect(t.queued).toHaveLength(1);
  });

  it('loads by file path from a config, relative to its base directory', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mailframe-example-'));
    server = await MailServer.create({
      baseDir: repoRoot,
      config: {
        hostname: 'mx.test.example',
        dataDir,
        listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
        plugins: [
          { plugin: 'enhanced-status-codes' },
          { plugin: './examples/block-sender-domains/index.ts', config: { domains: ['spam.example'] } },
          { plugin: 'rcpt-local', config: { domains: ['example.com'] } },
          { plugin: 'queue-discard' },
        ],
      },
    });
    const [address] = await server.listen();
    const c = await connectClient(address?.port ?? 0);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<eve@spam.example>', 550, '5.7.1');
    await c.expect('MAIL FROM:<alice@example.org>', 250, '2.1.0');
    await c.expect('QUIT', 221);
  });

  it('refuses a config whose domains are not a list, naming the pointer and the plugin', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mailframe-example-'));
    const created = MailServer.create({
      baseDir: repoRoot,
      config: {
        dataDir,
        plugins: [
          { plugin: './examples/block-sender-domains/index.ts', config: { domains: 'spam.example' } },
        ],
      },
    });
    await expect(created).rejects.toMatchObject({
      code: 'MF_CONFIG_INVALID',
      message: expect.stringContaining(
        '/plugins/0/config/domains: must be array (plugin block-sender-domains)',
      ),
    });
  });
});
