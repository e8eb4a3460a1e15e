/**
 * Mail the server writes itself, DKIM-signed through dkim-sign's `dkimSigner`
 * service: bounces (the queue's DSNs). Each signature is checked by our own
 * verifier and by python3-dkim against the key in the test DNS server.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer } from '../../core/testkit-dns.ts';
import type { DeliveryJob, RecipientResult } from '../../core/types.ts';
import { type DkimKeyPair, generateDkimKeyPair, txtStrings } from '../../plugins/dkim-sign/keys.ts';
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
      /^DKIM-Signature: v=1; a=rsa-sha256;[^]*\r\nDKIM-Signature: v=1; a=ed25519-sha256;/,
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
