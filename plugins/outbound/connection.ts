/**
 * One client connection to an SMTP or LMTP server: TCP or a Unix socket,
 * implicit TLS or STARTTLS, replies read with a deadline, writes that honour
 * backpressure. Knows nothing about mail transactions (see smtp-client.ts).
 */

import { X509Certificate } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import {
  type DetailedPeerCertificate,
  type PeerCertificate,
  type TLSSocket,
  connect as tlsConnect,
} from 'node:tls';
import { type RemoteReply, ReplyReader, ReplySyntaxError } from './reply-reader.ts';
import type { TlsFailureType } from './tls-report.ts';

/** Where to connect: a TCP host and port, or a Unix socket path. */
export type Target =
  | { readonly host: string; readonly port: number; readonly socketPath?: undefined }
  | { readonly socketPath: string; readonly host?: undefined; readonly port?: undefined };

/** Client-side TLS settings. */
export interface TlsSettings {
  /** Refuse a certificate that does not verify (chain and name). */
  readonly rejectUnauthorized: boolean;
  /** SNI and the name the certificate must carry (default: the target host when it is a name). */
  readonly servername?: string;
  /** Trusted CA certificates (PEM) instead of the system store. */
  readonly ca?: string | Buffer | ReadonlyArray<string | Buffer>;
  /**
   * The name must be a DNS-ID of the certificate (subjectAltName; no CN
   * fallback, a wildcard only as the whole left-most label), as MTA-STS
   * demands (RFC 8461 3.3, 4.2). Default: Node's own check.
   */
  readonly dnsIdOnly?: boolean;
  /** Lowest TLS version accepted (default TLSv1.2). */
  readonly minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /**
   * A check of the client's own after the handshake (DANE, RFC 7672), used with
   * `rejectUnauthorized: false`: given the chain the server presented (leaf
   * first), a problem ends the connection as a certificate failure; none makes
   * the session `authorized`.
   */
  readonly verify?: (chain: readonly X509Certificate[]) => CertificateProblem | undefined;
}

/** Why a certificate was not accepted: the TLS-RPT result type (RFC 8460 4.3.2.1) and a reason for logs. */
export interface CertificateProblem {
  readonly failure: TlsFailureType;
  readonly reason: string;
}

export type ConnectionErrorKind = 'connect' | 'timeout' | 'closed' | 'protocol' | 'tls';

/** Why the conversation with the server could not go on. The message is for logs only. */
export class ConnectionError extends Error {
  readonly kind: ConnectionErrorKind;
  /** For `tls`: the handshake failed because the certificate did not verify. */
  readonly certificate: boolean;
  /** For `timeout`: what the client was waiting for. */
  readonly stage: string | undefined;
  /** For `tls`: the failure as TLS reporting (RFC 8460) names it. */
  readonly tlsFailure: TlsFailureType | undefined;
  constructor(
    kind: ConnectionErrorKind,
    message: string,
    options?: { cause?: unknown; certificate?: boolean; stage?: string; tlsFailure?: TlsFailureType },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ConnectionError';
    this.kind = kind;
    this.certificate = options?.certificate ?? false;
    this.stage = options?.stage;
    this.tlsFailure = options?.tlsFailure ?? (kind === 'tls' ? 'validation-failure' : undefined);
  }
}

export interface TlsState {
  readonly protocol: string;
  readonly cipher: string;
  /**
   * The certificate was checked and passed: the chain and host name verified
   * under `rejectUnauthorized`, or the settings' own `verify` accepted it. A
   * certificate nobody asked to check is not `authorized`.
   */
  readonly authorized: boolean;
  /** Why the chain or host name did not verify against the trusted CAs (an OpenSSL/Node code), checked or not. */
  readonly verifyError: string | undefined;
}

const isIp = (host: string): boolean => /^[\d.]+$/.test(host) || host.includes(':');

/** Certificate verification failures, as opposed to handshake failures. */
const CERT_ERROR =
  /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|ISSUER|DEPTH_ZERO|CHAIN|HOSTNAME|UNTRUSTED|EXPIRED/i;

/** A certificate verification error code as a TLS-RPT result type (RFC 8460 4.3.2.1). */
export function certificateFailure(code: string): TlsFailureType {
  if (/ALTNAME|HOSTNAME/i.test(code)) return 'certificate-host-mismatch';
  if (/EXPIRED|NOT_YET_VALID/i.test(code)) return 'certificate-expired';
  if (/SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ISSUER|UNTRUSTED|DEPTH_ZERO|CHAIN/i.test(code))
    return 'certificate-not-trusted';
  return 'validation-failure';
}

function tlsError(err: NodeJS.ErrnoException): ConnectionError {
  const code = err.code ?? err.message;
  const cert = CERT_ERROR.test(code);
  return new ConnectionError('tls', err.message, {
    cause: err,
    certificate: cert,
    tlsFailure: cert ? certificateFailure(code) : 'validation-failure',
  });
}

function tlsOptions(target: Target, settings: TlsSettings) {
  const servername =
    settings.servername ?? (target.host !== undefined && !isIp(target.host) ? target.host : undefined);
  return {
    rejectUnauthorized: settings.rejectUnauthorized,
    minVersion: settings.minVersion ?? 'TLSv1.2',
    ...(servername === undefined ? {} : { servername }),
    // Without a servername, the address connected to is what the certificate must name.
    ...(target.host === undefined ? {} : { host: target.host }),
    ...(settings.ca === undefined ? {} : { ca: settings.ca as string | Buffer | Array<string | Buffer> }),
    ...(settings.dnsIdOnly ? { checkServerIdentity: checkDnsId } : {}),
  };
}

/**
 * RFC 6125 matching of a DNS-ID only (RFC 8461 3.3 and 4.2): the name is one
 * of the certificate's subjectAltName DNS names, a wildcard matching only a
 * whole left-most label; the CN never counts. A `checkServerIdentity` for
 * `node:tls`: the error names a host mismatch as Node's own does.
 */
export function checkDnsId(host: string, cert: PeerCertificate): Error | undefined {
  let matched: string | undefined;
  try {
    matched = new X509Certificate(cert.raw).checkHost(host, {
      subject: 'never',
      wildcards: true,
      partialWildcards: false,
      multiLabelWildcards: false,
      singleLabelSubdomains: false,
    });
  } catch {
    matched = undefined;
  }
  if (matched !== undefined) return undefined;
  return Object.assign(new Error(`${host} is not a DNS name (subjectAltName) of the certificate`), {
    code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    host,
  });
}

export class SmtpConnection {
  #socket: Socket;
  readonly #target: Target;
  readonly #reader = new ReplyReader();
  readonly #replies: RemoteReply[] = [];
  #failure: ConnectionError | undefined;
  #waiters: Array<() => void> = [];
  #tls: TlsState | undefined;

  private constructor(socket: Socket, target: Target) {
    this.#socket = socket;
    this.#target = target;
    this.#attach(socket);
  }

  /** Connect; with `implicitTls` the TLS handshake completes first (port 465, RFC 8314). */
  static async open(
    target: Target,
    timeoutMs: number,
    implicitTls?: TlsSettings,
    localAddress?: string,
  ): Promise<SmtpConnection> {
    const where = netOptions(target, localAddress);
    const socket: Socket = implicitTls
      ? tlsConnect({ ...tlsOptions(target, implicitTls), ...where })
      : netConnect(where);
    const ready = implicitTls ? 'secureConnect' : 'connect';
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new ConnectionError('connect', 'connect timeout')), timeoutMs);
        socket.once(ready, () => {
          clearTimeout(timer);
          resolve();
        });
        socket.once('error', (err: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          const cert = implicitTls !== undefined && CERT_ERROR.test(err.code ?? err.message);
          reject(
            implicitTls && (cert || !err.syscall)
              ? tlsError(err)
              : new ConnectionError('connect', err.message, { cause: err }),
          );
        });
      });
    } catch (err) {
      socket.destroy();
      throw err;
    }
    socket.setNoDelay(true);
    const conn = new SmtpConnection(socket, target);
    if (implicitTls) {
      try {
        conn.#tls = checkedTlsState(socket as TLSSocket, implicitTls);
      } catch (err) {
        socket.destroy();
        throw err;
      }
    }
    return conn;
  }

  /** Set once TLS is in effect. */
  get tls(): TlsState | undefined {
    return this.#tls;
  }

  get closed(): boolean {
    return this.#failure !== undefined;
  }

  #attach(socket: Socket): void {
    socket.on('data', this.#onData);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
  }

  #detach(socket: Socket): void {
    socket.off('data', this.#onData);
    socket.off('error', this.#onError);
    socket.off('close', this.#onClose);
  }

  readonly #onData = (chunk: Buffer): void => {
    if (this.#failure) return;
    try {
      this.#replies.push(...this.#reader.push(chunk));
    } catch (err) {
      const why = err instanceof ReplySyntaxError ? err.message : 'bad reply';
      this.#fail(new ConnectionError('protocol', why, { cause: err }));
      this.#socket.destroy();
    }
    this.#wake();
  };

  readonly #onError = (err: Error): void => {
    this.#fail(new ConnectionError('closed', err.message, { cause: err }));
  };

  readonly #onClose = (): void => {
    this.#fail(new ConnectionError('closed', 'connection closed by the server'));
  };

  #fail(err: ConnectionError): void {
    this.#failure ??= err;
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const fn of waiters) fn();
  }

  /** Send command lines (CRLF added) in one write: a PIPELINING group is one packet. */
  send(lines: readonly string[]): void {
    if (this.#failure) return;
    this.#socket.write(lines.map((l) => `${l}\r\n`).join(''));
  }

  /** A reply that has already arrived, without waiting. */
  poll(): RemoteReply | undefined {
    return this.#replies.shift();
  }

  /** The next reply; throws `ConnectionError` on timeout, close or garbage. */
  async read(timeoutMs: number, waitingFor: string): Promise<RemoteReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const next = this.#replies.shift();
      if (next) return next;
      if (this.#failure) throw this.#failure;
      const left = deadline - Date.now();
      if (left <= 0) {
        const err = new ConnectionError('timeout', `timeout waiting for the reply to ${waitingFor}`, {
          stage: waitingFor,
        });
        this.#fail(err);
        this.#socket.destroy();
        throw err;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Write message data, waiting for the socket to drain when it asks to (at most `timeoutMs` per block). */
  async write(buffers: readonly Buffer[], timeoutMs: number): Promise<void> {
    if (this.#failure) throw this.#failure;
    const socket = this.#socket;
    socket.cork();
    for (const b of buffers) socket.write(b);
    socket.uncork();
    if (!socket.writableNeedDrain) return;
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        socket.off('drain', onDrain);
        this.#waiters = this.#waiters.filter((w) => w !== onFail);
      };
      const onDrain = () => {
        done();
        resolve();
      };
      const onFail = () => {
        if (!this.#failure) return;
        done();
        reject(this.#failure);
      };
      const timer = setTimeout(() => {
        done();
        const err = new ConnectionError('timeout', 'timeout sending message data', {
          stage: 'message data',
        });
        this.#fail(err);
        socket.destroy();
        reject(err);
      }, timeoutMs);
      socket.on('drain', onDrain);
      this.#waiters.push(onFail);
    });
    if (this.#failure) throw this.#failure;
  }

  /**
   * Switch to TLS after the server's 220 to STARTTLS (RFC 3207). Anything the
   * server sent after that reply is discarded: it came before the handshake.
   */
  async startTls(settings: TlsSettings, timeoutMs: number): Promise<TlsState> {
    if (this.#failure) throw this.#failure;
    const raw = this.#socket;
    this.#detach(raw);
    // The TLS socket reports failures from here on; an unheard error must not crash the process.
    raw.on('error', () => {});
    this.#reader.reset();
    this.#replies.length = 0;
    const secure = tlsConnect({ ...tlsOptions(this.#target, settings), socket: raw });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(new ConnectionError('timeout', 'TLS handshake timeout', { stage: 'the TLS handshake' })),
          timeoutMs,
        );
        secure.once('secureConnect', () => {
          clearTimeout(timer);
          resolve();
        });
        secure.once('error', (err: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          reject(tlsError(err));
        });
        raw.once('close', () => reject(new ConnectionError('closed', 'closed during the TLS handshake')));
      });
      this.#tls = checkedTlsState(secure, settings);
    } catch (err) {
      secure.destroy();
      raw.destroy();
      this.#fail(err as ConnectionError);
      throw err;
    }
    this.#socket = secure;
    this.#attach(secure);
    return this.#tls;
  }

  /** Send QUIT and wait briefly for the 221; then close. Never throws. */
  async quit(timeoutMs: number): Promise<void> {
    if (!this.#failure) {
      this.send(['QUIT']);
      try {
        await this.read(timeoutMs, 'QUIT');
      } catch {
        // the results are settled already
      }
    }
    this.close();
  }

  /** Close at once. */
  close(): void {
    this.#fail(new ConnectionError('closed', 'connection closed by the client'));
    this.#socket.end();
    this.#socket.destroy();
  }
}

function netOptions(
  target: Target,
  localAddress: string | undefined,
): { path: string } | { host: string; port: number; localAddress?: string } {
  if (target.socketPath !== undefined) return { path: target.socketPath };
  return {
    host: target.host,
    port: target.port,
    ...(localAddress === undefined ? {} : { localAddress }),
  };
}

/** The session's state after the settings' own `verify` ran; throws a `tls` ConnectionError when it refused the certificate. */
function checkedTlsState(socket: TLSSocket, settings: TlsSettings): TlsState {
  let authorized = settings.rejectUnauthorized && socket.authorized;
  if (settings.verify) {
    const problem = settings.verify(peerChain(socket));
    if (problem) {
      throw new ConnectionError('tls', problem.reason, { certificate: true, tlsFailure: problem.failure });
    }
    authorized = true;
  }
  const error = socket.authorizationError as unknown;
  return {
    protocol: socket.getProtocol() ?? 'unknown',
    cipher: socket.getCipher()?.name ?? 'unknown',
    authorized,
    verifyError: socket.authorized ? undefined : error instanceof Error ? error.message : String(error ?? ''),
  };
}

/** The certificates the server presented, leaf first (as far as they link by issuer). */
function peerChain(socket: TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (cert?.raw && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    chain.push(new X509Certificate(cert.raw));
    cert = cert.issuerCertificate;
  }
  return chain;
}
