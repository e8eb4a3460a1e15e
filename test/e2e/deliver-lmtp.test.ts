/**
 * deliver-lmtp against smtp-server in LMTP mode (RFC 2033), over TCP and over
 * a Unix socket: one result per recipient, from RCPT or after the data.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isReply } from '../../core/hooks.ts';
import type { DeliveryReport } from '../../core/types.ts';
import {
  type DeliveryServer,
  deliveryJob,
  type Peer,
  smtpError,
  startDeliveryServer,
  startPeer,
} from './deliver-helpers.ts';

let peer: Peer | undefined;
let mf: DeliveryServer | undefined;
let dir: string | undefined;
afterEach(async () => {
  await mf?.close();
  await peer?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  mf = undefined;
  peer = undefined;
  dir = undefined;
});

const TIMEOUTS = { connect: 2000, greeting: 2000, command: 2000, mail: 2000, rcpt: 2000, dataInit: 2000 };
const MESSAGE = 'Received: from a by b\r\nSubject: lmtp\r\n\r\nbody\r\n.starts with a dot\r\n';

async function deliver(server: DeliveryServer, job: ReturnType<typeof deliveryJob>): Promise<DeliveryReport> {
  const report = await server.server.outbound.deliver(job);
  if (report === undefined || isReply(report))
    throw new Error(`expected a report, got ${JSON.stringify(report)}`);
  return report;
}

describe('deliver-lmtp', () => {
  it('over TCP: one result per recipient, from RCPT or after the data', async () => {
    peer = await startPeer({
      lmtp: true,
      hideSTARTTLS: true,
      hideENHANCEDSTATUSCODES: true,
      onRcptTo(address, _session, cb) {
        if (address.address.startsWith('unknown')) cb(smtpError(550, '5.1.1 No such user'));
        else cb();
      },
      answerData: (session) =>
        session.envelope.rcptTo.map((r) => {
          if (r.address.startsWith('full')) return smtpError(452, '4.2.2 Mailbox full');
          if (r.address.startsWith('denied')) return smtpError(554, '5.7.1 Refused by policy');
          return '2.0.0 Delivered';
        }),
    });
    mf = await startDeliveryServer([
      {
        plugin: 'deliver-lmtp',
        config: {
          host: '127.0.0.1',
          port: peer.port,
          domains: ['local.example'],
          lhloName: 'relay.local.example',
          timeouts: TIMEOUTS,
        },
      },
    ]);
    const report = await deliver(
      mf,
      deliveryJob({
        to: ['ok@local.example', 'unknown@local.example', 'full@local.example', 'denied@local.example'],
        message: MESSAGE,
      }),
    );
    expect(report.results.map((r) => [r.recipient, r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['ok@local.example', 'delivered', 250, '2.0.0'],
      ['unknown@local.example', 'failed', 550, '5.1.1'],
      ['full@local.example', 'deferred', 452, '4.2.2'],
      ['denied@local.example', 'failed', 554, '5.7.1'],
    ]);
    const [got] = peer.received;
    expect(got?.helo).toBe('relay.local.example');
    expect(got?.rcpts.map((r) => r.address)).toEqual([
      'ok@local.example',
      'full@local.example',
      'denied@local.example',
    ]);
    expect(got?.data.equals(Buffer.from(MESSAGE))).toBe(true);
  });

  it('over a Unix socket', async () => {
    dir = await mkdtemp(join(tmpdir(), 'mailframe-lmtp-'));
    const socket = join(dir, 'lmtp.sock');
    peer = await startPeer({ lmtp: true, hideSTARTTLS: true, socketPath: socket });
    mf = await startDeliveryServer([
      { plugin: 'deliver-lmtp', config: { socket, domains: ['*'], timeouts: TIMEOUTS } },
    ]);
    const report = await deliver(
      mf,
      deliveryJob({ to: ['a@local.example', 'b@local.example'], message: MESSAGE }),
    );
    expect(report.results.map((r) => [r.status, r.mta])).toEqual([
      ['delivered', socket],
      ['delivered', socket],
    ]);
    expect(peer.received[0]?.helo).toBe('mx.test.example');
    expect(peer.received[0]?.data.equals(Buffer.from(MESSAGE))).toBe(true);
  });

  it('defers when the LMTP server is not there; claims only routed jobs with no domains', async () => {
    dir = await mkdtemp(join(tmpdir(), 'mailframe-lmtp-'));
    const socket = join(dir, 'absent.sock');
    mf = await startDeliveryServer([{ plugin: 'deliver-lmtp', config: { socket, timeouts: TIMEOUTS } }]);
    expect(
      await mf.server.outbound.deliver(deliveryJob({ to: ['a@local.example'], message: MESSAGE })),
    ).toBeUndefined();
    const report = await deliver(
      mf,
      deliveryJob({ to: ['a@local.example'], message: MESSAGE, route: 'deliver-lmtp' }),
    );
    expect(report.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['deferred', 451, '4.4.1'],
    ]);
  });

  it('refuses a config with both host and socket (or neither)', async () => {
    await expect(
      startDeliveryServer([{ plugin: 'deliver-lmtp', config: { host: '127.0.0.1', socket: '/tmp/x.sock' } }]),
    ).rejects.toMatchObject({ code: 'MF_PLUGIN_REGISTER' });
    await expect(startDeliveryServer([{ plugin: 'deliver-lmtp', config: {} }])).rejects.toMatchObject({
      code: 'MF_PLUGIN_REGISTER',
    });
  });
});
