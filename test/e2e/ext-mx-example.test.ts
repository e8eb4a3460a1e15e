/**
 * examples/mx/mailframe.json, started as it is (on a loopback port and a
 * temporary data directory): it offers the extensions a public MX offers and
 * takes a message that uses them into its durable queue.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { MailServer } from '../../core/server.ts';
import { connectClient, type SmtpClient } from '../../core/testkit.ts';

const file = join(import.meta.dirname, '..', '..', 'examples', 'mx', 'mailframe.json');

let server: MailServer | undefined;
let client: SmtpClient | undefined;
let dataDir: string | undefined;
afterEach(async () => {
  await client?.close();
  await server?.close(200);
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  client = undefined;
  server = undefined;
  dataDir = undefined;
});

async function startExample(): Promise<number> {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  dataDir = await mkdtemp(join(tmpdir(), 'mailframe-mx-'));
  const config = {
    ...raw,
    dataDir,
    listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0, role: 'mx' }],
    log: { level: 'silent' },
  };
  server = await MailServer.create({ config, baseDir: dirname(file) });
  const [address] = await server.listen();
  if (!address) throw new Error('no listener');
  return address.port;
}

describe('examples/mx', () => {
  it('advertises the public MX extensions', async () => {
    const port = await startExample();
    client = await connectClient(port);
    const ehlo = await client.expect('EHLO client.example', 250);
    expect(ehlo.lines.slice(1)).toEqual([
      'ENHANCEDSTATUSCODES',
      'PIPELINING',
      'SIZE 36700160',
      '8BITMIME',
      'BINARYMIME',
      'SMTPUTF8',
      'CHUNKING',
      'DSN',
      'LIMITS RCPTMAX=100',
    ]);
  });

  it('queues a message sent with SMTPUTF8, DSN and SIZE by nodemailer', async () => {
    const port = await startExample();
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port,
      secure: false,
      ignoreTLS: true,
      name: 'client.example',
    });
    const info = await transport.sendMail({
      from: 'j\u00f6rg@sender.example',
      to: 'postmaster@example.com',
      subject: 'Gr\u00fc\u00dfe',
      text: 'Hallo',
      dsn: { id: 'env-1', return: 'headers', notify: ['failure'], recipient: 'postmaster@example.com' },
    });
    transport.close();
    expect(info.accepted).toEqual(['postmaster@example.com']);
    expect(info.response).toMatch(/^250 2\.0\.0 /);
  });

  it('takes a message sent with BDAT', async () => {
    const port = await startExample();
    client = await connectClient(port);
    await client.expect('EHLO client.example', 250);
    await client.expect('MAIL FROM:<a@sender.example> BODY=BINARYMIME', 250);
    await client.expect('RCPT TO:<postmaster@example.com>', 250);
    const content = 'Subject: bdat\r\n\r\n\x00binary\r\n';
    client.send(`BDAT ${Buffer.byteLength(content)} LAST\r\n${content}`);
    const r = await client.read();
    expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
    await client.expect('QUIT', 221);
  });
});
