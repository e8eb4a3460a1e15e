/**
 * For the transport security tests: an HTTPS server on 127.0.0.1 standing in
 * for every `mta-sts.<domain>` policy host (certificates chosen by SNI, the
 * answer by the Host header), a `tlsReport` sink plugin that keeps the events,
 * and TLSA record data computed from a certificate.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import { createSecureContext } from 'node:tls';
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import type { TlsSessionEvent } from '../../plugins/outbound/tls-report.ts';

/** What the policy host answers for one `mta-sts.<domain>`. */
export interface PolicyAnswer {
  readonly body: string;
  /** Default 200. */
  readonly status?: number;
  /** Default `text/plain`. */
  readonly contentType?: string;
  /** Extra headers (e.g. `location` for a redirect). */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface PolicyServer {
  readonly port: number;
  /** Set (or remove, `undefined`) the answer for a policy host name. */
  set(host: string, answer: PolicyAnswer | undefined): void;
  /** Requests that reached the server for `host`. */
  requests(host: string): number;
  close(): Promise<void>;
}

/**
 * An HTTPS server answering `GET /.well-known/mta-sts.txt` per Host header;
 * `certs` maps an SNI name to its key and certificate (`fallback` for others).
 */
export async function startPolicyServer(
  certs: ReadonlyMap<string, { key: string; cert: string }>,
  fallback: { key: string; cert: string },
): Promise<PolicyServer> {
  const answers = new Map<string, PolicyAnswer>();
  const counts = new Map<string, number>();
  const contexts = new Map([...certs].map(([name, c]) => [name, createSecureContext(c)]));
  const server: Server = createServer(
    {
      ...fallback,
      SNICallback: (name, cb) => cb(null, contexts.get(name) ?? createSecureContext(fallback)),
    },
    (req, res) => {
      const host = (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
      counts.set(host, (counts.get(host) ?? 0) + 1);
      const answer = answers.get(host);
      if (req.url !== '/.well-known/mta-sts.txt' || !answer) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return;
      }
      res
        .writeHead(answer.status ?? 200, {
          'content-type': answer.contentType ?? 'text/plain',
          ...answer.headers,
        })
        .end(answer.body);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    set(host, answer) {
      if (answer === undefined) answers.delete(host);
      else answers.set(host, answer);
    },
    requests: (host) => counts.get(host) ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A policy file (RFC 8461 3.2). */
export function stsPolicy(
  mode: 'enforce' | 'testing' | 'none',
  mx: readonly string[],
  maxAge = 86400,
): string {
  return ['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAge}`, ''].join(
    '\r\n',
  );
}

/** A plugin publishing the `tlsReport` service that keeps every event in `events`. */
export function tlsReportSink(events: TlsSessionEvent[]) {
  return definePlugin({
    name: 'test-tls-report',
    schema: Type.Object({}),
    register(api) {
      api.provide('tlsReport', { record: (event) => void events.push(event) });
    },
  });
}

/** TLSA record data for `certPem` (its first certificate). */
export function tlsa(
  certPem: string,
  usage: number,
  selector: number,
  matchingType: number,
): { usage: number; selector: number; matchingType: number; data: Uint8Array } {
  const cert = new X509Certificate(certPem);
  const selected =
    selector === 0 ? cert.raw : (cert.publicKey.export({ type: 'spki', format: 'der' }) as Buffer);
  const data =
    matchingType === 1
      ? createHash('sha256').update(selected).digest()
      : matchingType === 2
        ? createHash('sha512').update(selected).digest()
        : selected;
  return { usage, selector, matchingType, data: new Uint8Array(data) };
}
