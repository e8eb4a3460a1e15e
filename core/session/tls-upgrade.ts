/**
 * The TLS seam (STARTTLS, RFC 3207, and implicit TLS, RFC 8314): wrap the
 * session's socket in a server-side TLS socket, wait for the handshake, and
 * reset the session to the state after the greeting: everything learnt from
 * the client before is discarded (RFC 3207 4.2), and plugins hear of it
 * through the `secured` hook.
 */
import { TLSSocket } from 'node:tls';
import { describe } from '../errors.ts';
import type { VerbContext } from '../plugin.ts';
import type { TlsInfo } from '../types.ts';
import type { SmtpSession } from './session.ts';

export async function upgradeToTls(
  s: SmtpSession,
  options: Parameters<VerbContext['upgradeToTls']>[0],
): Promise<TlsInfo> {
  s.output.flush();
  s.input.lines.clear(); // anything pipelined after STARTTLS is discarded (CVE-2011-0411 class)
  const plain = s.socket;
  s.input.detach(plain);
  const secure = new TLSSocket(plain, { ...options, isServer: true });
  // Renegotiation costs the server a handshake each time and serves SMTP nothing: refused
  // whatever options the TLS provider passed (the tls plugin also sets SSL_OP_NO_RENEGOTIATION).
  secure.disableRenegotiation();
  s.socket = secure;
  // A client that goes silent mid-handshake is timed out like any other.
  s.deadlines.armCommand(s.host.timeouts.command);
  let closed = false;
  const handlers: Array<[string, (err: Error) => void]> = [];
  try {
    await new Promise<void>((resolve, reject) => {
      handlers.push(
        ['secure', () => resolve()],
        ['error', (err: Error) => reject(err)],
        [
          'close',
          () => {
            closed = true;
            reject(new Error('closed during TLS handshake'));
          },
        ],
      );
      for (const [ev, fn] of handlers) secure.once(ev, fn);
      s.handshakeTimeout = () => reject(new Error('TLS handshake timed out'));
    });
  } catch (err) {
    s.log.info({ err: describe(err) }, 'TLS handshake failed');
    s.input.attach(secure);
    if (closed) s.finalize();
    else secure.destroy();
    throw err;
  } finally {
    s.handshakeTimeout = undefined;
    for (const [ev, fn] of handlers) secure.off(ev, fn);
  }
  s.input.attach(secure);
  const cipher = secure.getCipher();
  const servername = (secure as TLSSocket & { servername?: string | false }).servername;
  const info: TlsInfo = {
    protocol: secure.getProtocol() ?? 'unknown',
    cipher: cipher?.standardName ?? cipher?.name ?? 'unknown',
    peerVerified: secure.authorized,
    ...(typeof servername === 'string' ? { servername } : {}),
  };
  s.tls = info;
  s.host.observers.tls?.(s, info);
  const midSession = s.state !== 'connecting';
  if (s.transaction) await s.resetTransaction('rset');
  s.forgetClient();
  s.log.info({ tls: info.protocol, cipher: info.cipher }, 'TLS established');
  // Implicit TLS comes before the greeting: nothing was learnt, nobody needs telling.
  const hooks = s.host.hooks;
  if (midSession && hooks.secured.isUsed()) await hooks.secured.promise(s);
  return info;
}
