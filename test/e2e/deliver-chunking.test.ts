/**
 * The outbound client's BDAT (RFC 3030) against mailframe itself with the
 * chunking plugin (smtp-server has no CHUNKING): pipelined and one chunk at a
 * time, BINARYMIME, and per-recipient refusals on the way.
 */
import { existsSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { isReply } from '../../core/hooks.ts';
import { envelopeOf } from '../../plugins/outbound/envelope.ts';
import { sendMessage } from '../../plugins/outbound/smtp-client.ts';
import { useScope } from '../helpers/scope.ts';
import { deliveryJob, startDeliveryServer } from './deliver-helpers.ts';

const HAVE_CHUNKING = existsSync(new URL('../../plugins/chunking/index.ts', import.meta.url));
const HAVE_8BITMIME = existsSync(new URL('../../plugins/8bitmime/index.ts', import.meta.url));

const scope = useScope();

const MESSAGE =
  'From: a@origin.example\r\nSubject: chunks\r\n\r\nline one\r\n.\r\n.dot line\r\n\r\n.\r\nlast\r\n';
const LOCAL = ['rcpt-local', { domains: ['example.com'], mailboxes: ['bob', 'carol'] }] as const;

describe.skipIf(!HAVE_CHUNKING)('outbound BDAT against mailframe (chunking plugin)', () => {
  it('sends pipelined BDAT chunks that arrive byte for byte, with per-recipient refusals', async () => {
    const t = await scope.start({ plugins: ['chunking', LOCAL] });
    const proxy = await recordingProxy(t.port);
    const report = await sendMessage(
      {
        target: { host: '127.0.0.1', port: proxy.port },
        heloName: 'client.example',
        tls: 'none',
        chunkSize: 7,
      },
      envelopeOf(
        deliveryJob({ to: ['bob@example.com', 'nobody@example.com', 'carol@example.com'], message: MESSAGE }),
      ),
    );
    expect(report.results.map((r) => [r.recipient, r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['bob@example.com', 'delivered', 250, '2.0.0'],
      ['nobody@example.com', 'failed', 550, '5.1.1'],
      ['carol@example.com', 'delivered', 250, '2.0.0'],
    ]);
    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toEqual(['bob@example.com', 'carol@example.com']);
    expect(m?.text.endsWith(MESSAGE)).toBe(true);
    expect(m?.text.startsWith('Received: ')).toBe(true);
    await proxy.close();
    const wire = proxy.sent().toString('latin1');
    expect(wire).toContain('BDAT 7\r\nFrom: a');
    expect(wire).toMatch(/BDAT \d+ LAST\r\n/);
    expect(wire).not.toContain('DATA\r\n');
  });

  it('waits for each BDAT reply without PIPELINING; an empty message is one BDAT 0 LAST', async () => {
    const t = await scope.start({
      plugins: ['enhanced-status-codes', 'chunking', LOCAL],
      standardExtensions: false,
    });
    const opts = {
      target: { host: t.host, port: t.port },
      heloName: 'client.example',
      tls: 'none',
      chunkSize: 5,
    } as const;
    const first = await sendMessage(
      opts,
      envelopeOf(deliveryJob({ to: ['bob@example.com'], message: MESSAGE })),
    );
    expect(first.results.map((r) => r.status)).toEqual(['delivered']);
    const empty = await sendMessage(
      opts,
      envelopeOf(deliveryJob({ to: ['carol@example.com'], message: '' })),
    );
    expect(empty.results.map((r) => r.status)).toEqual(['delivered']);
    const [a, b] = await t.waitForMessages(2);
    expect(a?.text.endsWith(MESSAGE)).toBe(true);
    expect(b?.recipients).toEqual(['carol@example.com']);
  });

  it.skipIf(!HAVE_8BITMIME)('sends a BINARYMIME message with BODY=BINARYMIME over BDAT', async () => {
    const t = await scope.start({ plugins: ['chunking', '8bitmime', LOCAL] });
    const binary = Buffer.concat([
      Buffer.from('Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n'),
      Buffer.from([0, 1, 2, 0x0d, 0x2e, 0x0a, 0xff, 0xfe, 0x0a, 0x2e, 0x0d, 0x0a]),
    ]);
    const mf = await startDeliveryServer([
      { plugin: 'relay-smarthost', config: { host: t.host, port: t.port, tls: 'none' } },
    ]);
    try {
      const report = await mf.server.outbound.deliver(
        deliveryJob({ to: ['bob@example.com'], message: binary, attributes: { body: 'BINARYMIME' } }),
      );
      expect(report && !isReply(report) && report.results.map((r) => r.status)).toEqual(['delivered']);
    } finally {
      await mf.close();
    }
    const [m] = await t.waitForMessages(1);
    expect(m?.attributes.body).toBe('BINARYMIME');
    expect(m?.data.subarray(m.data.length - binary.length).equals(binary)).toBe(true);
  });
});

/** A TCP proxy to 127.0.0.1:`port` that records what the client sent. */
async function recordingProxy(
  port: number,
): Promise<{ port: number; sent(): Buffer; close(): Promise<void> }> {
  const sent: Buffer[] = [];
  const sockets: Socket[] = [];
  const server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    sockets.push(client, upstream);
    client.on('data', (b: Buffer) => sent.push(b));
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    sent: () => Buffer.concat(sent),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
