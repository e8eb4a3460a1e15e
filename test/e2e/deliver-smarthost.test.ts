/**
 * relay-smarthost against a real smtp-server on loopback: envelope and
 * parameters, TLS and AUTH, per-recipient results, refusals before sending.
 */

import { rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isReply } from '../../core/hooks.ts';
import type { DeliveryReport } from '../../core/types.ts';
import {
  type Certificate,
  type DeliveryServer,
  deliveryJob,
  makeCertificate,
  type Peer,
  type PeerOptions,
  smtpError,
  startDeliveryServer,
  startPeer,
} from './deliver-helpers.ts';

let cert: Certificate;
let peer: Peer | undefined;
let mf: DeliveryServer | undefined;

beforeAll(async () => {
  cert = await makeCertificate();
});
afterAll(async () => {
  await rm(cert.dir, { recursive: true, force: true });
});
afterEach(async () => {
  await mf?.close();
  await peer?.close();
  mf = undefined;
  peer = undefined;
});

const SHORT = { connect: 2000, greeting: 2000, command: 2000, mail: 2000, rcpt: 2000, dataInit: 2000 };

async function setup(peerOptions: PeerOptions, relay: Record<string, unknown> = {}): Promise<DeliveryServer> {
  peer = await startPeer({ key: cert.key, cert: cert.cert, ...peerOptions });
  mf = await startDeliveryServer([
    {
      plugin: 'relay-smarthost',
      config: { host: '127.0.0.1', port: peer.port, caFile: cert.certPath, timeouts: SHORT, ...relay },
    },
  ]);
  return mf;
}

async function deliver(server: DeliveryServer, job: ReturnType<typeof deliveryJob>): Promise<DeliveryReport> {
  const report = await server.server.outbound.deliver(job);
  if (report === undefined || isReply(report))
    throw new Error(`expected a report, got ${JSON.stringify(report)}`);
  return report;
}

const MESSAGE =
  'Received: from client.example by mx.test.example\r\nFrom: a@origin.example\r\nSubject: test\r\n\r\nhello\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n';

describe('relay-smarthost', () => {
  it('relays the envelope, SIZE, DSN parameters and the exact message over verified STARTTLS', async () => {
    const server = await setup({});
    const report = await deliver(
      server,
      deliveryJob({
        from: 'sender@origin.example',
        to: [
          {
            address: 'bob@dest.example',
            attributes: {
              dsn: {
                notify: ['SUCCESS', 'FAILURE'],
                orcpt: { type: 'rfc822', address: 'Bob+x=y@dest.example' },
              },
            },
          },
          'carol@dest.example',
        ],
        message: MESSAGE,
        attributes: { dsn: { ret: 'HDRS', envid: 'id+1=2 x' } },
      }),
    );
    expect(report.results.map((r) => [r.recipient, r.status, r.reply?.code])).toEqual([
      ['bob@dest.example', 'delivered', 250],
      ['carol@dest.example', 'delivered', 250],
    ]);
    expect(report.results[0]?.mta).toBe('127.0.0.1');
    // The smarthost offers DSN and took NOTIFY over: it reports success itself (RFC 3461 6.2).
    expect(report.results.map((r) => r.dsnHandoff)).toEqual(['passed-on', 'passed-on']);
    const [got] = peer!.received;
    expect(got?.secure).toBe(true);
    expect(got?.helo).toBe('mx.test.example');
    expect(got?.data.equals(Buffer.from(MESSAGE))).toBe(true);
    expect(got?.from?.address).toBe('sender@origin.example');
    expect(got?.from?.args).toMatchObject({ SIZE: String(Buffer.byteLength(MESSAGE)) });
    expect(got?.from?.args).not.toHaveProperty('BODY');
    expect(got?.dsn).toEqual({ ret: 'HDRS', envid: 'id+1=2 x' });
    expect(got?.rcpts.map((r) => r.address)).toEqual(['bob@dest.example', 'carol@dest.example']);
    expect(got?.rcpts[0]?.args).toMatchObject({
      NOTIFY: 'SUCCESS,FAILURE',
      ORCPT: 'rfc822;Bob+x=y@dest.example',
    });
    expect(got?.rcpts[1]?.args).toBe(false);
  });

  it('declares BODY=8BITMIME for 8-bit data and SMTPUTF8 for an internationalized address', async () => {
    const server = await setup({});
    const message = 'Subject: caf\u00e9\r\n\r\nna\u00efve\r\n';
    const report = await deliver(
      server,
      deliveryJob({
        from: 'j\u00f6rg@origin.example',
        to: ['bob@dest.example'],
        message,
        attributes: { smtputf8: true },
      }),
    );
    expect(report.results[0]?.status).toBe('delivered');
    const [got] = peer!.received;
    expect(got?.bodyType).toBe('8bitmime');
    expect(got?.smtpUtf8).toBe(true);
    expect(got?.from?.address).toBe('j\u00f6rg@origin.example');
    expect(got?.data.toString('utf8')).toBe(message);
  });

  it('maps per-recipient refusals: 5xx fails, 4xx defers, the rest is delivered', async () => {
    // Enhanced codes come from the texts below, exactly as written.
    const server = await setup({
      hideENHANCEDSTATUSCODES: true,
      onRcptTo(address, _session, cb) {
        if (address.address.startsWith('gone')) cb(smtpError(550, '5.1.1 No such user'));
        else if (address.address.startsWith('busy')) cb(smtpError(451, '4.2.0 Try later'));
        else cb();
      },
    });
    const report = await deliver(
      server,
      deliveryJob({ to: ['gone@dest.example', 'ok@dest.example', 'busy@dest.example'], message: MESSAGE }),
    );
    expect(report.results.map((r) => [r.recipient, r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['gone@dest.example', 'failed', 550, '5.1.1'],
      ['ok@dest.example', 'delivered', 250, undefined],
      ['busy@dest.example', 'deferred', 451, '4.2.0'],
    ]);
    expect(report.results[0]?.reply?.text).toBe('No such user');
    expect(peer!.received[0]?.rcpts.map((r) => r.address)).toEqual(['ok@dest.example']);
    // Every recipient refused: the pipelined DATA is refused too, and nothing is sent.
    const none = await deliver(
      server,
      deliveryJob({ to: ['gone@dest.example', 'busy@dest.example'], message: MESSAGE }),
    );
    expect(none.results.map((r) => [r.status, r.reply?.code])).toEqual([
      ['failed', 550],
      ['deferred', 451],
    ]);
    expect(peer!.received).toHaveLength(1);
  });

  it('a refused MAIL fails every recipient; a 4xx after the data defers them', async () => {
    const server = await setup({
      hideENHANCEDSTATUSCODES: true,
      onMailFrom(address, _session, cb) {
        if (address.address.startsWith('spammer')) cb(smtpError(550, '5.7.1 Go away'));
        else cb();
      },
      answerData: () => smtpError(452, '4.3.1 Disk full'),
    });
    const refused = await deliver(
      server,
      deliveryJob({
        from: 'spammer@origin.example',
        to: ['a@dest.example', 'b@dest.example'],
        message: MESSAGE,
      }),
    );
    expect(refused.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['failed', 550, '5.7.1'],
      ['failed', 550, '5.7.1'],
    ]);
    const later = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(later.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['deferred', 452, '4.3.1'],
    ]);
  });

  it('works without PIPELINING, one command at a time', async () => {
    const server = await setup({ hidePIPELINING: true, hideDSN: true });
    const report = await deliver(
      server,
      deliveryJob({
        to: [{ address: 'a@dest.example', attributes: { dsn: { notify: ['NEVER'] } } }, 'b@dest.example'],
        message: MESSAGE,
      }),
    );
    expect(report.results.map((r) => r.status)).toEqual(['delivered', 'delivered']);
    // No DSN at the next hop: a SUCCESS request is ours to answer, as `relayed` (RFC 3461 4.1).
    expect(report.results.map((r) => r.dsnHandoff)).toEqual(['relayed', 'relayed']);
    // No DSN offered: no NOTIFY sent.
    expect(peer!.received[0]?.rcpts[0]?.args).toBe(false);
    expect(peer!.received[0]?.data.equals(Buffer.from(MESSAGE))).toBe(true);
  });

  it('authenticates with AUTH PLAIN over TLS, the password from the environment', async () => {
    process.env['MF_TEST_SMARTHOST_PASS'] = 's3cret';
    const server = await setup(
      {
        authOptional: false,
        onAuth(auth, _session, cb) {
          if (auth.username === 'relayuser' && auth.password === 's3cret')
            cb(null, { user: `${auth.method}:${auth.username}` });
          else cb(smtpError(535, '5.7.8 Bad credentials'));
        },
      },
      { auth: { user: 'relayuser', passEnv: 'MF_TEST_SMARTHOST_PASS' } },
    );
    const report = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(report.results[0]?.status).toBe('delivered');
    expect(peer!.received[0]?.user).toBe('PLAIN:relayuser');
    expect(peer!.received[0]?.secure).toBe(true);
  });

  it('authenticates with AUTH LOGIN when PLAIN is not offered', async () => {
    const server = await setup(
      {
        authOptional: false,
        authMethods: ['LOGIN'],
        onAuth(auth, _session, cb) {
          if (auth.username === 'relayuser' && auth.password === 'pw')
            cb(null, { user: `${auth.method}:${auth.username}` });
          else cb(smtpError(535, '5.7.8 Bad credentials'));
        },
      },
      { auth: { user: 'relayuser', pass: 'pw' } },
    );
    const report = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(report.results[0]?.status).toBe('delivered');
    expect(peer!.received[0]?.user).toBe('LOGIN:relayuser');
  });

  it('falls back to HELO when EHLO is refused, and then uses no extension', async () => {
    const server = await setup({ disabledCommands: ['EHLO'] });
    const report = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(report.results[0]?.status).toBe('delivered');
    const [got] = peer!.received;
    expect(got?.secure).toBe(false);
    expect(got?.from?.args).toBe(false);
    expect(got?.data.equals(Buffer.from(MESSAGE))).toBe(true);
  });

  it('defers when the credentials are refused, and never sends them without TLS', async () => {
    const server = await setup(
      { authOptional: false, onAuth: (_auth, _session, cb) => cb(smtpError(535, '5.7.8 Bad credentials')) },
      { auth: { user: 'relayuser', pass: 'wrong' } },
    );
    const refused = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(refused.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['deferred', 451, '4.7.0'],
    ]);
    await mf?.close();
    await peer?.close();
    let authTried = false;
    const plain = await setup(
      {
        hideSTARTTLS: true,
        allowInsecureAuth: true,
        onAuth: (_auth, _session, cb) => {
          authTried = true;
          cb(null, { user: 'x' });
        },
      },
      { auth: { user: 'relayuser', pass: 'pw' } },
    );
    const report = await deliver(plain, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(report.results.map((r) => [r.status, r.reply?.enhanced])).toEqual([['deferred', '4.7.4']]);
    expect(authTried).toBe(false);
    expect(peer!.received).toHaveLength(0);
  });

  it('tls: required defers when STARTTLS is not offered; opportunistic sends in clear', async () => {
    const server = await setup({ hideSTARTTLS: true }, { tls: 'required' });
    const report = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(report.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['deferred', 451, '4.7.4'],
    ]);
    expect(peer!.received).toHaveLength(0);
    await mf?.close();
    await peer?.close();
    const clear = await setup({ hideSTARTTLS: true });
    const sent = await deliver(clear, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(sent.results[0]?.status).toBe('delivered');
    expect(peer!.received[0]?.secure).toBe(false);
  });

  it('speaks TLS from the first byte with tls: implicit (port 465 style)', async () => {
    const server = await setup({ secure: true }, { tls: 'implicit' });
    const report = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(report.results[0]?.status).toBe('delivered');
    expect(peer!.received[0]?.secure).toBe(true);
  });

  it('refuses to start when auth.passEnv names an unset variable', async () => {
    delete process.env['MF_TEST_UNSET_PASS'];
    await expect(
      startDeliveryServer([
        {
          plugin: 'relay-smarthost',
          config: { host: '127.0.0.1', auth: { user: 'u', passEnv: 'MF_TEST_UNSET_PASS' } },
        },
      ]),
    ).rejects.toMatchObject({ code: 'MF_PLUGIN_REGISTER' });
  });

  it('defers on a certificate that does not verify', async () => {
    // No caFile: the self-signed certificate is not trusted.
    const server = await setup({}, { caFile: undefined });
    const report = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(report.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['deferred', 451, '4.7.5'],
    ]);
    expect(peer!.received).toHaveLength(0);
  });

  it('REQUIRETLS: sent with the parameter over verified TLS, refused without TLS or verification', async () => {
    const server = await setup({});
    const ok = await deliver(
      server,
      deliveryJob({ to: ['a@dest.example'], message: MESSAGE, attributes: { requireTls: true } }),
    );
    expect(ok.results[0]?.status).toBe('delivered');
    expect(peer!.received[0]?.requireTls).toBe(true);
    await mf?.close();
    await peer?.close();

    const noTls = await setup({ hideSTARTTLS: true });
    const refused = await deliver(
      noTls,
      deliveryJob({ to: ['a@dest.example'], message: MESSAGE, attributes: { requireTls: true } }),
    );
    expect(refused.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['failed', 550, '5.7.30'],
    ]);
    expect(peer!.received).toHaveLength(0);
    await mf?.close();
    await peer?.close();

    const unverified = await setup({}, { caFile: undefined, rejectUnauthorized: false });
    const deferred = await deliver(
      unverified,
      deliveryJob({ to: ['a@dest.example'], message: MESSAGE, attributes: { requireTls: true } }),
    );
    expect(deferred.results.map((r) => [r.status, r.reply?.enhanced])).toEqual([['deferred', '4.7.5']]);
    // Without REQUIRETLS the unverified connection is good enough.
    const plain = await deliver(unverified, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(plain.results[0]?.status).toBe('delivered');
    expect(peer!.received).toHaveLength(1);
    expect(peer!.received[0]?.requireTls).toBe(false);
  });

  it('refuses before sending: 8-bit without 8BITMIME, UTF-8 without SMTPUTF8, too big for SIZE', async () => {
    const server = await setup({ hide8BITMIME: true, hideSMTPUTF8: true, size: 200 });
    const eight = await deliver(
      server,
      deliveryJob({ to: ['a@dest.example'], message: 'Subject: x\r\n\r\n\u00e9\r\n' }),
    );
    expect(eight.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['failed', 554, '5.6.3'],
    ]);
    const utf8 = await deliver(server, deliveryJob({ to: ['j\u00f6rg@dest.example'], message: MESSAGE }));
    expect(utf8.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['failed', 553, '5.6.7'],
    ]);
    const big = await deliver(
      server,
      deliveryJob({ to: ['a@dest.example'], message: MESSAGE + 'x'.repeat(300) }),
    );
    expect(big.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['failed', 552, '5.3.4'],
    ]);
    expect(peer!.received).toHaveLength(0);
    // A 7-bit message still goes through.
    const fine = await deliver(server, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(fine.results[0]?.status).toBe('delivered');
  });

  it('defers when the smarthost refuses connections or never greets', async () => {
    const closed = await startPeer({ key: cert.key, cert: cert.cert });
    const port = closed.port;
    await closed.close();
    mf = await startDeliveryServer([
      { plugin: 'relay-smarthost', config: { host: '127.0.0.1', port, timeouts: SHORT } },
    ]);
    const refused = await deliver(mf, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
    expect(refused.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['deferred', 451, '4.4.1'],
    ]);
    await mf.close();

    const sockets: Socket[] = [];
    const silent: Server = createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const silentPort = (silent.address() as { port: number }).port;
    try {
      mf = await startDeliveryServer([
        {
          plugin: 'relay-smarthost',
          config: { host: '127.0.0.1', port: silentPort, timeouts: { ...SHORT, greeting: 200 } },
        },
      ]);
      const timedOut = await deliver(mf, deliveryJob({ to: ['a@dest.example'], message: MESSAGE }));
      expect(timedOut.results.map((r) => [r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
        ['deferred', 451, '4.4.2'],
      ]);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('claims only jobs routed to it or, unrouted, for its domains', async () => {
    const server = await setup({}, { domains: ['dest.example', '*.sub.example'] });
    const mine = await server.server.outbound.deliver(
      deliveryJob({ to: ['a@x.sub.example'], message: MESSAGE }),
    );
    expect(mine && !isReply(mine) && mine.results[0]?.status).toBe('delivered');
    expect(
      await server.server.outbound.deliver(deliveryJob({ to: ['a@other.example'], message: MESSAGE })),
    ).toBeUndefined();
    expect(
      await server.server.outbound.deliver(
        deliveryJob({ to: ['a@dest.example'], message: MESSAGE, route: 'deliver-lmtp' }),
      ),
    ).toBeUndefined();
    const routed = await server.server.outbound.deliver(
      deliveryJob({ to: ['a@other.example'], message: MESSAGE, route: 'relay-smarthost' }),
    );
    expect(routed && !isReply(routed) && routed.results[0]?.status).toBe('delivered');
    expect(peer!.received).toHaveLength(2);
  });
});
