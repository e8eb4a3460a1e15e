/**
 * examples/outbound/mailframe.json, started as it is (submission on a
 * loopback port, a temporary data directory, the test's DNS server, a
 * "remote" MX on 127.0.0.2): an application submits with AUTH over STARTTLS,
 * and the message is queued and delivered by MX.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { MailServer } from '../../core/server.ts';
import { startTestDnsServer, type TestDnsServer } from '../../core/testkit-dns.ts';
import { freePort, type Remote, startRemote } from './mx-helpers.ts';

const root = join(import.meta.dirname, '..', '..');
const file = join(root, 'examples', 'outbound', 'mailframe.json');
// relay-acl is built on its own branch; the example needs it to start.
const haveRelayAcl = existsSync(join(root, 'plugins', 'relay-acl', 'index.ts'));

let server: MailServer | undefined;
let dns: TestDnsServer | undefined;
let remote: Remote | undefined;
let dataDir: string | undefined;
afterEach(async () => {
  await server?.close(200);
  await remote?.close();
  await dns?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  server = undefined;
  remote = undefined;
  dns = undefined;
  dataDir = undefined;
});

describe.skipIf(!haveRelayAcl)('examples/outbound', () => {
  it('takes a message submitted with AUTH over STARTTLS and delivers it to the MX of the recipient domain', async () => {
    const port = await freePort();
    remote = await startRemote('127.0.0.2', port, { hideSTARTTLS: true });
    dns = await startTestDnsServer({
      'dest.example': { MX: [{ preference: 10, exchange: 'mx.dest.example' }] },
      'mx.dest.example': { A: ['127.0.0.2'] },
    });
    const raw = JSON.parse(readFileSync(file, 'utf8')) as { plugins: Array<Record<string, unknown>> };
    dataDir = await mkdtemp(join(tmpdir(), 'mailframe-outbound-'));
    const config = {
      ...raw,
      dataDir,
      listeners: [{ name: 'submission', host: '127.0.0.1', port: 0, role: 'submission' }],
      dns: { servers: [dns.address], timeout: 500, attempts: 1 },
      log: { level: 'silent' },
      // The remote's port stands in for 25.
      plugins: raw.plugins.map((p) =>
        p['plugin'] === 'deliver-mx' ? { ...p, config: { ...(p['config'] as object), port } } : p,
      ),
    };
    server = await MailServer.create({ config, baseDir: dirname(file) });
    const [address] = await server.listen();
    if (!address) throw new Error('no listener');

    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: address.port,
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'alice', pass: 'example-only-password' },
      name: 'app.example',
    });
    const info = await transport.sendMail({
      from: 'alice@out.example.com',
      to: 'bob@dest.example',
      subject: 'Your order',
      text: 'Shipped.',
    });
    transport.close();
    expect(info.accepted).toEqual(['bob@dest.example']);
    // The queue delivers on its own; wait (bounded) for the remote to have it.
    for (let i = 0; i < 200 && remote.received.length === 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(remote.received).toHaveLength(1);
    expect(remote.received[0]?.rcpts.map((r) => r.address)).toEqual(['bob@dest.example']);
    expect(remote.received[0]?.data.toString('utf8')).toContain('Subject: Your order');
  });
});
