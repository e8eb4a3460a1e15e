/**
 * The admin HTTP API and web console on a listener of their own (loopback by
 * default, TLS optional): health and readiness probes, the queue (list, show,
 * hold, release, retry, delete, bulk actions), live counters, the effective
 * configuration with secrets redacted, and plugin health. Every `/api/` route
 * needs a bearer token whose SHA-256 is in the tokens file (`mailframe
 * admin-token` makes one). See docs/plugins/admin-http.md and the "Admin API"
 * section of docs/operations.md.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import Type from 'typebox';
import { describe } from '../../core/errors.ts';
import { definePlugin } from '../../core/plugin.ts';
import { type FileWatch, watchFiles } from '../tls/watch-files.ts';
import { type AdminServer, startAdminServer } from './app.ts';
import type { AdminContext } from './route.ts';
import { ROUTES } from './routes/index.ts';
import { readTokens, type TokenEntry } from './tokens.ts';

export const DEFAULT_ADMIN_PORT = 9726;

export const schema = Type.Object(
  {
    host: Type.String({
      minLength: 1,
      default: '127.0.0.1',
      description: 'Address to listen on. Keep it on loopback (or a management network) unless TLS is on.',
    }),
    port: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: DEFAULT_ADMIN_PORT,
      description: 'TCP port (0: any free port, for tests).',
    }),
    tokensFile: Type.String({
      minLength: 1,
      description:
        'File of API tokens, one `NAME sha256:HEX` line each (`mailframe admin-token NAME` prints one), relative to the working directory.',
    }),
    watch: Type.Boolean({
      default: true,
      description:
        'Reload the tokens file, and with `tls` the certificate and key, when they change (a bad file keeps the previous ones).',
    }),
    tls: Type.Optional(
      Type.Object(
        {
          cert: Type.String({ minLength: 1, description: 'PEM certificate chain file.' }),
          key: Type.String({ minLength: 1, description: 'PEM private key file.' }),
        },
        { additionalProperties: false, description: 'Serve HTTPS with this certificate and key.' },
      ),
    ),
    console: Type.Boolean({ default: true, description: 'Serve the web console at `/`.' }),
  },
  { additionalProperties: false },
);

/** What admin-http publishes: where it listens (tests and tools use it with port 0). */
export interface AdminHttpService {
  address(): { readonly host: string; readonly port: number; readonly tls: boolean } | undefined;
}

declare module '../../core/plugin.ts' {
  interface Services {
    'admin-http': AdminHttpService;
  }
}

/**
 * Read `files` again whenever they change (debounced) and hand the result to
 * `apply`, or the error to `failed`. Reads may overlap and finish out of
 * order: only the latest one's outcome is taken.
 */
function reloadOnChange<T>(
  files: readonly string[],
  read: () => Promise<T>,
  apply: (value: T) => void,
  failed: (err: unknown) => void,
  watchFailed: (err: Error, dir: string) => void,
): FileWatch {
  let reloads = 0;
  return watchFiles(
    files,
    200,
    () => {
      const reload = ++reloads;
      read().then(
        (value) => {
          if (reload === reloads) apply(value);
        },
        (err: unknown) => {
          if (reload === reloads) failed(err);
        },
      );
    },
    watchFailed,
  );
}

/** `127.0.0.0/8`, `::1` or `localhost`. */
function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/** The console's files: beside this module in the repository, under the package root once built. */
function consoleDir(): string | undefined {
  for (const dir of [
    join(import.meta.dirname, 'console'),
    join(import.meta.dirname, '..', '..', '..', 'plugins', 'admin-http', 'console'),
  ]) {
    if (existsSync(join(dir, 'index.html'))) return dir;
  }
  return undefined;
}

export default definePlugin({
  name: 'admin-http',
  description:
    'HTTP admin API (health, readiness, queue, counters, config, plugin health) and the web console, behind bearer tokens.',
  schema,
  async register(api, config) {
    const tokensPath = resolve(config.tokensFile);
    let tokens: readonly TokenEntry[] = await readTokens(tokensPath);
    if (tokens.length === 0)
      api.log.warn({ path: tokensPath }, 'the admin tokens file has no token: every API call is refused');
    const tlsFiles = config.tls && { cert: resolve(config.tls.cert), key: resolve(config.tls.key) };
    const readTls = async (files: { cert: string; key: string }) => {
      const pair = { cert: await readFile(files.cert), key: await readFile(files.key) };
      createSecureContext(pair); // throws on a bad file or a key that does not match
      return pair;
    };
    const tls = tlsFiles && (await readTls(tlsFiles));
    if (!tls && !isLoopback(config.host))
      api.log.warn(
        { host: config.host },
        'the admin API listens beyond loopback without TLS: bearer tokens cross the network in the clear',
      );
    const ctx: AdminContext = {
      status: api.server.status,
      queue: () => api.service('queue'),
      log: api.log,
      now: () => api.server.clock.now(),
      reload: () => api.reload(),
    };
    let server: AdminServer | undefined;
    api.provide('admin-http', {
      address: () => server && { host: server.host, port: server.port, tls: tls !== undefined },
    });
    if (config.watch) {
      const tokensWatch = reloadOnChange(
        [tokensPath],
        () => readTokens(tokensPath),
        (next) => {
          tokens = next;
          api.log.info({ path: tokensPath, tokens: next.length }, 'admin tokens file reloaded');
        },
        (err) => {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
            // Deleting the file is how an operator in a hurry revokes every token: honour it.
            tokens = [];
            api.log.warn({ path: tokensPath }, 'admin tokens file removed: every API call is refused');
            return;
          }
          api.log.error(
            { err: describe(err) },
            'admin tokens file reload failed; keeping the previous tokens',
          );
        },
        (err, dir) =>
          api.log.error({ err: err.message, dir }, 'cannot watch the admin tokens file directory'),
      );
      api.onClose(() => tokensWatch.close());
    }
    if (config.watch && tlsFiles) {
      // A renewed certificate (certbot, a Kubernetes secret) is served without a restart.
      const certWatch = reloadOnChange(
        [tlsFiles.cert, tlsFiles.key],
        () => readTls(tlsFiles),
        (pair) => {
          if (server === undefined) return;
          server.setCertificate(pair);
          api.log.info({ cert: tlsFiles.cert }, 'admin API certificate reloaded');
        },
        (err) =>
          api.log.error(
            { err: describe(err) },
            'admin API certificate reload failed; keeping the previous certificate',
          ),
        (err, dir) =>
          api.log.error({ err: err.message, dir }, 'cannot watch the admin certificate directory'),
      );
      api.onClose(() => certWatch.close());
    }
    const ui = config.console ? consoleDir() : undefined;
    if (config.console && ui === undefined)
      api.log.warn('the web console files are missing: serving the API only');
    // Listen once every plugin registered, so the routes find the services they use.
    api.onStart(async () => {
      server = await startAdminServer({
        host: config.host,
        port: config.port,
        ...(tls ? { tls } : {}),
        tokens: () => tokens,
        routes: ROUTES,
        ctx,
        log: api.log,
        consoleDir: ui,
      });
    });
    api.onClose(async () => {
      await server?.close();
      server = undefined;
    });
  },
});
