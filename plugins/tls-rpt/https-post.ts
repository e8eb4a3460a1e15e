/**
 * A report over HTTPS (RFC 8460 section 5.4): POST the gzip'd JSON with
 * `Content-Type: application/tlsrpt+gzip`. Any 2xx is success; redirects are
 * not followed. The server's certificate is checked against the system roots
 * and, when configured, the operator's extra CA certificates. One deadline
 * covers the whole exchange (connect, send, the answer to its end), so an
 * endpoint that answers slowly cannot hold up the other reports.
 */
import { request } from 'node:https';
import { rootCertificates } from 'node:tls';

export interface PostOptions {
  /** Extra trusted CA certificates (PEM), added to the system roots. */
  readonly extraCa?: string;
  /** Milliseconds for the whole exchange. */
  readonly timeoutMs: number;
  readonly userAgent: string;
  /** Abort the request (the server is stopping). */
  readonly signal?: AbortSignal;
}

/** Undefined on success, else why it failed (for the log). */
export function postReport(uri: string, body: Buffer, opts: PostOptions): Promise<string | undefined> {
  return new Promise((resolve) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const done = (why: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(why);
    };
    let req: ReturnType<typeof request>;
    try {
      req = request(uri, {
        method: 'POST',
        headers: {
          'content-type': 'application/tlsrpt+gzip',
          'content-length': String(body.length),
          'user-agent': opts.userAgent,
        },
        ...(opts.extraCa ? { ca: [...rootCertificates, opts.extraCa] } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      done(`bad request: ${(err as Error).message}`);
      return;
    }
    req.on('response', (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      res.on('end', () => done(status >= 200 && status < 300 ? undefined : `HTTP ${status}`));
      res.on('error', (err) => done(err.message));
    });
    // Not the socket's idle timeout: an answer that trickles in would reset that one forever.
    timer = setTimeout(() => {
      done(`no answer within ${opts.timeoutMs} ms`);
      req.destroy();
    }, opts.timeoutMs);
    req.on('error', (err) => done(err.message));
    req.end(body);
  });
}
