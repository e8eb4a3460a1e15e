/**
 * The admin HTTP server: Fastify with our pino logger and ajv validation,
 * bearer-token auth, security headers, the console's static files and the
 * routes of `routes/index.ts`.
 */
import { readFile } from 'node:fs/promises';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Fastify, { type FastifyRequest, LogController } from 'fastify';
import { describe } from '../../core/errors.ts';
import type { Logger } from '../../core/types.ts';
import { type AdminContext, type AdminRoute, sendError } from './route.ts';
import { bearerToken, matchToken, type TokenEntry } from './tokens.ts';

export interface AdminServerOptions {
  readonly host: string;
  readonly port: number;
  readonly tls?: { readonly key: Buffer; readonly cert: Buffer };
  /** The current tokens (the file may be reloaded). */
  tokens(): readonly TokenEntry[];
  readonly routes: readonly AdminRoute[];
  readonly ctx: AdminContext;
  readonly log: Logger;
  /** Directory of the console's static files (undefined: no console). */
  readonly consoleDir: string | undefined;
}

export interface AdminServer {
  readonly host: string;
  readonly port: number;
  /** With TLS: serve this certificate and key to new connections from now on. */
  setCertificate(tls: { readonly key: Buffer; readonly cert: Buffer }): void;
  close(): Promise<void>;
}

/** The console's files: small, read once at start, served from memory. */
const CONSOLE_FILES: ReadonlyArray<{ url: string; file: string; type: string }> = [
  { url: '/', file: 'index.html', type: 'text/html; charset=utf-8' },
  { url: '/console.css', file: 'console.css', type: 'text/css; charset=utf-8' },
  { url: '/console.js', file: 'console.js', type: 'text/javascript; charset=utf-8' },
  { url: '/favicon.svg', file: 'favicon.svg', type: 'image/svg+xml' },
];

export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/**
 * A request URL for the log: the path without the query, where a client may
 * have put a credential (`?access_token=`, RFC 6750 2.3, which we do not take).
 */
function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : `${url.slice(0, q)}?...`;
}

export async function startAdminServer(o: AdminServerOptions): Promise<AdminServer> {
  const app = Fastify({
    loggerInstance: o.log,
    // Requests are not logged one by one (probes and the console's polling would flood the log);
    // queue actions and refused tokens are, by the routes and the auth hook.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
    forceCloseConnections: true,
    ...(o.tls ? { https: { key: o.tls.key, cert: o.tls.cert } } : {}),
    // Unknown keys are refused rather than dropped; query strings are coerced (limit=10 is a number).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: true } },
  });
  const callers = new WeakMap<FastifyRequest, string>();

  app.addHook('onRequest', async (req, reply) => {
    const config = req.routeOptions.config as { auth?: boolean } | undefined;
    if (config?.auth !== true) return;
    const token = bearerToken(req.headers.authorization);
    const name = token === undefined ? undefined : matchToken(o.tokens(), token);
    if (name === undefined) {
      // RFC 6750 3: no credentials gets the bare challenge; wrong ones say invalid_token.
      reply.header(
        'www-authenticate',
        token === undefined ? 'Bearer realm="mailframe"' : 'Bearer realm="mailframe", error="invalid_token"',
      );
      o.log.info(
        { url: pathOf(req.url), remote: req.ip, presented: token !== undefined },
        'admin API: refused token',
      );
      return sendError(reply, 401, 'unauthorized', 'a valid bearer token is required');
    }
    callers.set(req, name);
  });

  app.addHook('onSend', async (req, reply, payload) => {
    reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('x-frame-options', 'DENY');
    if (req.url.startsWith('/api/') || req.url.startsWith('/readyz'))
      reply.header('cache-control', 'no-store');
    return payload;
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    const e = err as { validation?: unknown; statusCode?: number };
    if (e.validation !== undefined) return sendError(reply, 400, 'bad-request', describe(err));
    if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500)
      return sendError(reply, e.statusCode, 'bad-request', describe(err));
    o.log.error({ err, url: pathOf(req.url) }, `admin API: request failed: ${describe(err)}`);
    return sendError(reply, 500, 'internal', 'internal error (see the server log)');
  });
  app.setNotFoundHandler((req, reply) =>
    sendError(reply, 404, 'not-found', `no route ${req.method} ${req.url}`),
  );

  for (const route of o.routes) {
    app.route({
      method: route.method,
      url: route.url,
      // Fastify annotates the schemas it compiles: give it copies, the route values stay frozen and shared.
      schema: structuredClone(route.schema),
      config: { auth: route.auth },
      handler: (req, reply) =>
        route.handle(
          { params: req.params, query: req.query, body: req.body, caller: callers.get(req) },
          reply,
          o.ctx,
        ),
    });
  }

  if (o.consoleDir !== undefined) {
    for (const f of CONSOLE_FILES) {
      const body = await readFile(join(o.consoleDir, f.file));
      app.get(f.url, { config: { auth: false } }, (_req, reply) => reply.type(f.type).send(body));
    }
  }

  await app.listen({ host: o.host, port: o.port });
  const address = app.server.address() as AddressInfo;
  o.log.info(
    { address: address.address, port: address.port, tls: o.tls !== undefined },
    'admin API listening',
  );
  return {
    host: address.address,
    port: address.port,
    setCertificate: (tls) => {
      if (o.tls === undefined) throw new Error('the admin API serves plain HTTP: no certificate to replace');
      (app.server as HttpsServer).setSecureContext({ key: tls.key, cert: tls.cert });
    },
    close: () => app.close(),
  };
}
