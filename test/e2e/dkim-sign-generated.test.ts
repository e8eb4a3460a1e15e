/**
 * Mail the server writes itself, DKIM-signed through dkim-sign's `dkimSigner`
 * service: bounces (the queue's DSNs). Each signature is checked by our own
 * verifier and by python3-dkim against the key in the test DNS server.
 */
import { createPrivateKey } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer } from '../../core/testkit-dns.ts';
import type { DeliveryJob, RecipientResult } from '../../core/types.ts';
import { type DkimKeyPair, generateDkimKeyPair, txtStrings } from '../../plugins/dkim-sign/keys.ts';
import { createDkimSigner } from '../../plugins/dkim-sign/service.ts';
import { ownVerify } from '../helpers/own-dkim.ts';
import { ensurePythonDkim, interop } from '../helpers/python-dkim.ts';
import { Deliverer, FakeClock, type SeenJob, sendMail, useQueueScope } from './queue-harness.ts';

const scope = useQueueScope();
const [fsStore] = scope.stores;
const HOST = 'mx.test.example';
let rsa: DkimKeyPair;
let ed: DkimKeyPair;

beforeAll(async () => {
  [rsa, ed] = await Promise.all([generateDkimKeyPair('rsa'), generateDkimKeyPair('ed25519')]);
  await ensurePythonDkim();
}, 120_000);

function failNobody(job: DeliveryJob): { results: RecipientResult[] } {
  return {
    results: job.recipients.map((r) =>
      r.address.startsWith('nobody')
        ? {
            recipient: r.address,
            status: 'failed',
            reply: { code: 550, enhanced: '5.1.1', text: 'No such user' },
          }
        : { recipient: r.address, status: 'delivered', reply: { code: 250, enhanced: '2.0.0', text: 'OK' } },
    ),
  };
}

async function bounce(signing: boolean): Promise<SeenJob> {
  const clock = new FakeClock();
  const dir = await scope.tempDir();
  await writeFile(join(dir, 'rsa.pem'), rsa.privateKeyPem);
  await writeFile(join(dir, 'ed.pem'), ed.privateKeyPem);
  const d = new Deliverer(clock);
  d.behaviour = failNobody;
  const dkim = {
    plugin: 'dkim-sign',
    id: 'dkim-sign',
    config: {
      domains: [
        {
          domain: HOST,
          selectors: [
            { selector: 'r1', keyFile: join(dir, 'rsa.pem') },
            { selector: 'e1', keyFile: join(dir, 'ed.pem') },
          ],
        },
      ],
    },
  };
  if (!fsStore) throw new Error('no queue store');
  const s = await scope.start({
    store: fsStore,
    clock,
    dataDir: dir,
    plugins: signing ? ['dsn', dkim, d.plugin] : ['dsn', d.plugin],
  });
  await sendMail(s.port, {
    from: 'alice@example.net',
    to: ['nobody@example.com'],
    body: 'From: <alice@example.net>\r\nSubject: t\r\n\r\nHello.\r\n',
  });
  await s.queue.runDue();
  const bounces = d.from('');
  expect(bounces).toHaveLength(1);
  return bounces[0] as SeenJob;
}

describe('dkim-sign signs the bounces the queue writes', () => {
  it('puts an RSA and an Ed25519 signature on a bounce that both verifiers accept', async () => {
    const b = await bounce(true);
    const message = Buffer.from(b.message, 'utf8');
    expect(b.message).toMatch(
      /^DKIM-Signature: v=1; a=rsa-sha256;[\s\S]*\r\nDKIM-Signature: v=1; a=ed25519-sha256;/,
    );
    expect(b.message).toContain(`d=${HOST}; s=r1;`);
    const dns = await startTestDnsServer({
      [`r1._domainkey.${HOST}`]: { TXT: [txtStrings(rsa.record)] },
      [`e1._domainkey.${HOST}`]: { TXT: [txtStrings(ed.record)] },
    });
    scope.defer(() => dns.close());
    const own = await ownVerify(message, dns, new FakeClock());
    expect(own.signatures.map((v) => v.result)).toEqual(['pass', 'pass']);
    const records = { [`r1._domainkey.${HOST}`]: rsa.record, [`e1._domainkey.${HOST}`]: ed.record };
    const py = await interop(['verify', JSON.stringify(records)], message);
    expect(py.stdout).toContain('ok=True');
    expect(py.code).toBe(0);
  });

  it('still sends the bounce, unsigned, without dkim-sign', async () => {
    const b = await bounce(false);
    expect(b.message).toContain('From: Mail Delivery System <MAILER-DAEMON@mx.test.example>');
    expect(b.message).not.toContain('DKIM-Signature');
  });
});

describe('the dkimSigner service', () => {
  it('signs streamed content (a 3 MB body) without changing it, and leaves unknown From domains alone', async () => {
    const clock = new FakeClock();
    const signer = createDkimSigner({
      domains: new Map([
        [
          'example.org',
          { domain: 'example.org', keys: [{ selector: 'e1', key: createPrivateKey(ed.privateKeyPem) }] },
        ],
      ]),
      headers: ['from', 'subject', 'date'],
      oversign: new Set(['from']),
      headerCanon: 'relaxed',
      bodyCanon: 'relaxed',
      maxHeaderBytes: 65536,
      now: () => clock.now(),
    });
    const line = `${'x'.repeat(78)}\r\n`;
    const body = Buffer.from(line.repeat(Math.ceil((3 * 1024 * 1024) / line.length)), 'latin1');
    const head = Buffer.from('From: Reports <r@example.org>\r\nSubject: big\r\n\r\n', 'latin1');
    const content = {
      size: head.length + body.length,
      stream: () => Readable.from([head, body.subarray(0, 1_000_000), body.subarray(1_000_000)]),
    };
    const signed = await signer.sign(content);
    if (Buffer.isBuffer(signed)) throw new Error('a streamed content came back as one buffer');
    const chunks: Buffer[] = [];
    for await (const c of signed.stream()) chunks.push(c as Buffer);
    const message = Buffer.concat(chunks);
    expect(message.length).toBe(signed.size);
    expect(message.subarray(message.length - content.size).equals(Buffer.concat([head, body]))).toBe(true);
    const py = await interop(['verify', JSON.stringify({ 'e1._domainkey.example.org': ed.record })], message);
    expect(py.code).toBe(0);

    const other = Buffer.from('From: <a@elsewhere.example>\r\n\r\nHi\r\n', 'latin1');
    expect(await signer.sign(other)).toBe(other);
    expect(signer.canSign('EXAMPLE.org')).toBe(true);
    expect(signer.canSign('elsewhere.example')).toBe(false);
  }, 60_000);
});
