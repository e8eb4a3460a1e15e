import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectClient } from 'mailframe/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { type Service, startService } from './service.ts';

let service: Service | undefined;
let dataDir: string | undefined;
afterEach(async () => {
  await service?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  service = undefined;
  dataDir = undefined;
});

describe('embedding example', () => {
  it('runs SMTP next to HTTP in one process, with a plugin defined in code', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mailframe-embed-'));
    service = await startService({ smtpPort: 0, httpPort: 0, dataDir });
    expect(service.smtpPort).toBeGreaterThan(0);

    const c = await connectClient(service.smtpPort);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@client.example>', 250);
    await c.expect('RCPT TO:<elsewhere@other.example>', 550, '5.7.1');
    await c.expect('RCPT TO:<bob@inbox.test>', 250);
    await c.expect('DATA', 354);
    const done = await c.sendData('Subject: hi\r\n\r\nhello');
    expect(done.code).toBe(250);
    await c.close();

    const health = (await (await fetch(`http://127.0.0.1:${service.httpPort}/health`)).json()) as {
      smtp: Array<{ port: number }>;
      messages: number;
    };
    expect(health.smtp[0]?.port).toBe(service.smtpPort);
    expect(health.messages).toBe(1);
    expect(service.inbox[0]).toMatchObject({ from: 'a@client.example', to: ['bob@inbox.test'] });
    expect(service.inbox[0]?.text).toContain('hello');
  });
});
