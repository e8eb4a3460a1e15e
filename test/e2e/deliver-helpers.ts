/**
 * Shared by the delivery tests: a mailframe server with delivery plugins (no
 * listener, no queue: tests call `server.outbound.deliver(job)` as the queue
 * does), hand-built delivery jobs, a throwaway certificate made with openssl,
 * and an smtp-server peer that records what it received.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import {
  SMTPServer,
  type SMTPServerAddress,
  type SMTPServerOptions,
  type SMTPServerSession,
} from 'smtp-server';
import { isReply } from '../../core/hooks.ts';
import { silentLogger } from '../../core/log.ts';
import type { Clock, PluginDefinition } from '../../core/plugin.ts';
import { MailServer } from '../../core/server.ts';
import type {
  DeliveryJob,
  DeliveryRecipient,
  DeliveryReport,
  EnvelopeAttributes,
  RecipientAttributes,
} from '../../core/types.ts';
import { opensslRequest } from '../helpers/certs.ts';

export interface DeliveryServer {
  readonly server: MailServer;
  readonly dataDir: string;
  close(): Promise<void>;
}

/** Hand `job` to the server's delivery plugins as the queue does; the report, or a thrown error for anything else. */
export async function deliverJob(s: DeliveryServer, job: DeliveryJob): Promise<DeliveryReport> {
  const report = await s.server.outbound.deliver(job);
  if (report === undefined || isReply(report))
    throw new Error(`expected a report, got ${JSON.stringify(report)}`);
  return report;
}

/** What a delivery test server may have besides its plugins (mx-helpers uses a DNS server, a logger and a clock). */
export interface DeliveryServerOptions {
  /** Resolver settings (core config `dns`). */
  readonly dns?: Record<string, unknown>;
  readonly logger?: Logger;
  readonly clock?: Clock;
  /** Prefix of the temporary data directory's name. */
  readonly dirPrefix?: string;
  /** Use this data directory (kept on close) instead of a temporary one. */
  readonly dataDir?: string;
  /** Plugin definitions the config's entries may name (test plugins). */
  readonly definitions?: readonly PluginDefinition[];
}

/** A mailframe server with the given plugin entries, not listening. */
export async function startDeliveryServer(
  plugins: ReadonlyArray<{ plugin: string; config?: Record<string, unknown>; id?: string }>,
  opts: DeliveryServerOptions = {},
): Promise<DeliveryServer> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), opts.dirPrefix ?? 'mailframe-deliver-')));
  const removeDir = () =>
    opts.dataDir === undefined ? rm(dataDir, { recursive: true, force: true }) : Promise.resolve();
  let server: MailServer;
  try {
    server = await MailServer.create({
      config: {
        hostname: 'mx.test.example',
        dataDir,
        ...(opts.dns ? { dns: opts.dns } : {}),
        listeners: [{ name: 'smtp', host: '127.0.0.1', port: 0 }],
        plugins,
      },
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.definitions ? { plugins: opts.definitions } : {}),
    });
  } catch (err) {
    await removeDir();
    throw err;
  }
  return {
    server,
    dataDir,
    async close() {
      await server.close(0);
      await removeDir();
    },
  };
}

export interface JobOptions {
  readonly from?: string;
  readonly to: ReadonlyArray<string | { address: string; attributes: Record<string, unknown> }>;
  readonly message: string | Buffer;
  readonly attributes?: Record<string, unknown>;
  readonly route?: string;
  readonly destination?: string;
  /** Queue id (default `job-1`). */
  readonly id?: string;
  readonly attempts?: number;
  /** Arrival time (default: unknown). */
  readonly receivedAt?: number;
}

/** A delivery job as the queue would build it; the message streams in uneven pieces. */
export function deliveryJob(o: JobOptions): DeliveryJob {
  const data = typeof o.message === 'string' ? Buffer.from(o.message, 'utf8') : o.message;
  const recipients: DeliveryRecipient[] = o.to.map((r) =>
    typeof r === 'string'
      ? { address: r, attributes: {} }
      : { address: r.address, attributes: r.attributes as RecipientAttributes },
  );
  const first = recipients[0]?.address ?? '';
  return {
    id: o.id ?? 'job-1',
    destination: o.destination ?? first.slice(first.lastIndexOf('@') + 1).toLowerCase(),
    route: o.route,
    from: o.from ?? 'sender@origin.example',
    recipients,
    attributes: (o.attributes ?? {}) as EnvelopeAttributes,
    attempts: o.attempts ?? 0,
    ...(o.receivedAt === undefined ? {} : { receivedAt: o.receivedAt }),
    stream: () => Readable.from(pieces(data)),
    log: silentLogger(),
  };
}

function pieces(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const steps = [5, 17, 3, 4096];
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = steps[i % steps.length] as number;
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

export interface Certificate {
  readonly dir: string;
  readonly keyPath: string;
  readonly certPath: string;
  readonly key: Buffer;
  readonly cert: Buffer;
}

/** A self-signed certificate for `localhost` and 127.0.0.1, valid one day, in a new temp dir. */
export async function makeCertificate(): Promise<Certificate> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-deliver-cert-'));
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  await opensslRequest(keyPath, certPath, '/CN=localhost', {
    days: 1,
    extensions: ['subjectAltName=DNS:localhost,IP:127.0.0.1'],
  });
  return { dir, keyPath, certPath, key: await readFile(keyPath), cert: await readFile(certPath) };
}

/** What the peer received in one transaction. */
export interface Received {
  readonly helo: string;
  readonly secure: boolean;
  readonly user: unknown;
  readonly from: SMTPServerAddress | undefined;
  readonly rcpts: readonly SMTPServerAddress[];
  readonly requireTls: boolean;
  readonly bodyType: string | undefined;
  readonly smtpUtf8: boolean;
  readonly dsn: { ret: string | null; envid: string | null } | undefined;
  readonly data: Buffer;
}

export interface Peer {
  readonly server: SMTPServer;
  readonly port: number;
  readonly received: Received[];
  close(): Promise<void>;
}

/** What `onData` should answer once the data is read (LMTP: one entry per recipient). */
export type DataAnswer = undefined | Error | Array<string | Error>;

export interface PeerOptions extends SMTPServerOptions {
  /** Listen on this Unix socket instead of 127.0.0.1:0. */
  readonly socketPath?: string;
  /** Listen on this address and port instead of 127.0.0.1:0 (a "remote" mail exchanger). */
  readonly listenOn?: { readonly address: string; readonly port: number };
  readonly answerData?: (session: SMTPServerSession) => DataAnswer;
}

/** An error smtp-server sends as `code text`. */
export function smtpError(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

/** Start an smtp-server peer that records every transaction. */
export async function startPeer(opts: PeerOptions): Promise<Peer> {
  const received: Received[] = [];
  const { socketPath, listenOn, answerData, ...options } = opts;
  const server = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    // smtp-server hides these unless asked; a modern smarthost offers them.
    hideENHANCEDSTATUSCODES: false,
    hideDSN: false,
    hideREQUIRETLS: false,
    size: 10 * 1024 * 1024,
    ...options,
    onData(stream, session, callback) {
      const parts: Buffer[] = [];
      stream.on('data', (c: Buffer) => parts.push(c));
      stream.on('end', () => {
        const env = session.envelope;
        received.push({
          helo: session.hostNameAppearsAs,
          secure: session.secure,
          user: session.user,
          from: env.mailFrom || undefined,
          rcpts: [...env.rcptTo],
          requireTls: env.requireTLS === true,
          bodyType: env.bodyType,
          smtpUtf8: env.smtpUtf8 === true,
          dsn: env.dsn ? { ret: env.dsn.ret, envid: env.dsn.envid } : undefined,
          data: Buffer.concat(parts),
        });
        const answer = answerData?.(session);
        if (answer instanceof Error) callback(answer);
        else if (Array.isArray(answer)) callback(null, answer as never);
        else callback();
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => {
    if (socketPath) server.listen(socketPath, resolve);
    else server.listen(listenOn?.port ?? 0, listenOn?.address ?? '127.0.0.1', resolve);
  });
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    server,
    port,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
