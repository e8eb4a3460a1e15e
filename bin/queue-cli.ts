/**
 * `mailframe queue ...`: look at and manage the queue of a queue-fs or
 * queue-pg server.
 *
 *   queue list [--state active|deferred|held|quarantined] [--search TEXT] [--limit N]
 *   queue show ID | hold ID | release ID | retry ID | delete ID | stats
 *   queue quarantine list | show ID | release ID | delete ID
 *   queue migrate   (queue-pg: bring the database schema up to date)
 *   every command takes --json for scripts
 *
 * queue-fs: with the server running, requests go through its control socket
 * (`<queue dir>/control.sock`) so the running scheduler sees every change.
 * With no server, the CLI opens the queue files itself (every change is an
 * atomic rename, so this is safe); it refuses when the server's pid file
 * names a live process it cannot reach.
 *
 * queue-pg: the CLI works on the database directly, running servers or not
 * (each change is one transaction; release and retry wake the nodes by NOTIFY).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { TSchema } from 'typebox';
import { createAjv, readConfigFile, validatePluginConfig } from '../core/config.ts';
import { silentLogger } from '../core/log.ts';
import {
  type ControlRequest,
  type ControlResponse,
  controlRequest,
  dispatch,
  livePid,
} from '../plugins/queue/control.ts';
import { formatDuration } from '../plugins/queue/duration.ts';
import type {
  QueueDetail,
  QueueFilter,
  QueueState,
  QueueStats,
  QueueSummary,
  ReplyRecord,
} from '../plugins/queue/types.ts';
import { queueDirOf } from '../plugins/queue-fs/index.ts';
import { FsQueueStore } from '../plugins/queue-fs/store.ts';
import {
  connectionOf,
  openStore,
  schema as pgSchema,
  type QueuePgConfig,
} from '../plugins/queue-pg/index.ts';
import { migrate, SCHEMA_VERSION } from '../plugins/queue-pg/migrations.ts';

export interface CliOutput {
  out(text: string): void;
  err(text: string): void;
}

const stdio: CliOutput = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

export const QUEUE_USAGE = `Usage: mailframe queue <command> [options]

Commands:
  list                 Messages in the queue, oldest first
      --state S        only active (being delivered), deferred, held or quarantined ones
      --search TEXT    only those whose sender or a recipient contains TEXT
      --limit N        at most N
  show ID              Envelope, per-recipient state and header section of a message
  hold ID              Stop delivering a message (it stays queued)
  release ID           Deliver a held message again
  retry ID             Make a message's pending recipients due now
  delete ID            Remove a message without delivering or bouncing it
  stats                Counts, size, oldest message, busiest destinations
  quarantine list      Messages a policy action set aside on arrival, with the reason
                       (takes --search and --limit)
  quarantine show ID   A quarantined message (as show)
  quarantine release ID  Deliver a quarantined message normally
  quarantine delete ID   Remove a quarantined message (no delivery, no bounce)
  migrate              queue-pg: apply the database schema migrations

Options:
  -c, --config FILE    Server configuration (finds the queue directory)
      --json           Machine-readable output
`;

type QueueLocation =
  | { readonly kind: 'fs'; readonly root: string; readonly socket: string | undefined }
  | { readonly kind: 'pg'; readonly config: QueuePgConfig };

/** Find the queue from the server configuration: queue-fs's directory or queue-pg's database. */
async function locate(configFile: string): Promise<QueueLocation> {
  const { raw, baseDir } = await readConfigFile(configFile);
  const cfg = (raw ?? {}) as { dataDir?: unknown; plugins?: unknown };
  const dataDir = resolve(baseDir, typeof cfg.dataDir === 'string' ? cfg.dataDir : './var');
  const entries = Array.isArray(cfg.plugins) ? (cfg.plugins as Array<Record<string, unknown>>) : [];
  const index = entries.findIndex((e) => e?.['plugin'] === 'queue-fs' || e?.['plugin'] === 'queue-pg');
  const entry = entries[index];
  if (!entry) throw new Error(`${configFile} configures no queue (queue-fs or queue-pg plugin)`);
  if (entry['plugin'] === 'queue-pg') {
    const v = validatePluginConfig(
      createAjv(),
      pgSchema as TSchema,
      entry['config'] ?? {},
      `/plugins/${index}/config`,
      'queue-pg',
    );
    if (v.errors.length > 0) throw new Error(`${configFile}: ${v.errors.join('; ')}`);
    return { kind: 'pg', config: v.config as QueuePgConfig };
  }
  const config = (entry['config'] ?? {}) as { dir?: unknown; controlSocket?: unknown };
  const root = queueDirOf(dataDir, typeof config.dir === 'string' ? config.dir : undefined);
  return {
    kind: 'fs',
    root,
    socket: config.controlSocket === false ? undefined : join(root, 'control.sock'),
  };
}

/** queue-pg: the database is the queue; every node sees a change at once. */
async function performPg(config: QueuePgConfig, req: ControlRequest): Promise<ControlResponse> {
  // A name of its own, so the running nodes do not take its NOTIFY for their own.
  const store = await openStore(
    { ...config, nodeId: `mailframe-queue-cli-${process.pid}` },
    {
      clock: { now: () => Date.now() },
      log: silentLogger(),
      listen: false,
      migrate: false,
    },
  );
  try {
    return await dispatch(store, req);
  } finally {
    await store.close();
  }
}

/** `mailframe queue migrate`: bring queue-pg's schema up to date. */
async function migrateQueue(where: QueueLocation, io: CliOutput): Promise<number> {
  if (where.kind !== 'pg') {
    io.out('queue-fs keeps no schema: nothing to migrate\n');
    return 0;
  }
  const pool = new pg.Pool({ ...connectionOf(where.config), max: 1 });
  try {
    const applied = await migrate(pool, where.config.schema);
    io.out(
      applied.length > 0
        ? `queue schema "${where.config.schema}" migrated to version ${SCHEMA_VERSION} (applied ${applied.join(', ')})\n`
        : `queue schema "${where.config.schema}" is up to date (version ${SCHEMA_VERSION})\n`,
    );
    return 0;
  } finally {
    await pool.end();
  }
}

/** Ask the running server, or open the files when no server runs (queue-pg: the database). */
async function perform(where: QueueLocation, req: ControlRequest): Promise<ControlResponse> {
  if (where.kind === 'pg') return performPg(where.config, req);
  if (where.socket) {
    const answer = await controlRequest(where.socket, req);
    if (answer) return answer;
  }
  const pid = await livePid(join(where.root, 'server.pid'));
  if (pid !== undefined) {
    throw new Error(
      `a server (pid ${pid}) is using ${where.root} but its control socket does not answer; ` +
        'enable "controlSocket" or stop the server (remove server.pid if that process is not mailframe)',
    );
  }
  if (!existsSync(join(where.root, 'messages'))) {
    throw new Error(`no queue at ${where.root} (has the server run yet?)`);
  }
  const store = await FsQueueStore.open({
    root: where.root,
    fsync: true,
    clock: { now: () => Date.now() },
    log: silentLogger(),
  });
  try {
    await store.ready;
    return await dispatch(store, req);
  } finally {
    await store.close();
  }
}

/** Run `mailframe queue <argv...>`; resolves with the exit code. */
export async function runQueueCli(
  argv: string[],
  configFile: string,
  io: CliOutput = stdio,
): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    io.err(`mailframe queue: ${(err as Error).message}\n\n${QUEUE_USAGE}`);
    return 2;
  }
  const { values, command, sub, id } = parsed;
  if (values.help || command === undefined || command === 'help') {
    (command === undefined && !values.help ? io.err : io.out)(QUEUE_USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  if (command === 'migrate') {
    if (id !== undefined) {
      io.err(`mailframe queue: migrate takes no argument (got "${id}")\n\n${QUEUE_USAGE}`);
      return 2;
    }
    try {
      return await migrateQueue(await locate(values.config ?? configFile), io);
    } catch (err) {
      io.err(`mailframe queue: ${(err as Error).message}\n`);
      return 1;
    }
  }
  const request =
    command === 'quarantine' ? quarantineRequest(sub, id, values) : toRequest(command, id, values);
  if (typeof request === 'string') {
    io.err(`mailframe queue: ${request}\n\n${QUEUE_USAGE}`);
    return 2;
  }
  let res: ControlResponse;
  try {
    res = await perform(await locate(values.config ?? configFile), request);
  } catch (err) {
    io.err(`mailframe queue: ${(err as Error).message}\n`);
    return 1;
  }
  if (!res.ok) {
    if (values.json) io.out(`${JSON.stringify({ error: res.error, code: res.code })}\n`);
    else io.err(`mailframe queue: ${res.error}\n`);
    return res.code === 'bad-request' ? 2 : 1;
  }
  if (values.json) {
    io.out(`${JSON.stringify(res.result, null, 2)}\n`);
    return 0;
  }
  const now = Date.now();
  switch (request.op) {
    case 'list':
      io.out(
        request.area === 'quarantine'
          ? formatQuarantine(res.result as QueueSummary[], now)
          : formatList(res.result as QueueSummary[], now),
      );
      break;
    case 'show':
      io.out(formatDetail(res.result as QueueDetail, now));
      break;
    case 'stats':
      io.out(formatStats(res.result as QueueStats, now));
      break;
    default:
      io.out(`${DONE[request.op]} ${request.id}\n`);
  }
  return 0;
}

const DONE: Readonly<Record<string, string>> = {
  hold: 'held',
  release: 'released',
  retry: 'due now:',
  delete: 'deleted',
};

function parse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: 'boolean' },
      state: { type: 'string' },
      search: { type: 'string' },
      limit: { type: 'string' },
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...rest] = positionals;
  // `quarantine <sub> [ID]`: one word more than the other commands.
  const sub = command === 'quarantine' ? rest.shift() : undefined;
  const [id, extra] = rest;
  if (extra !== undefined) throw new Error(`unexpected argument "${extra}"`);
  return { values, command, sub, id };
}

function toRequest(
  command: string,
  id: string | undefined,
  values: ReturnType<typeof parse>['values'],
): ControlRequest | string {
  switch (command) {
    case 'list': {
      if (id !== undefined) return `list takes no argument (got "${id}")`;
      const filter: { state?: QueueState; search?: string; limit?: number } = {};
      if (values.state !== undefined) {
        if (!['active', 'deferred', 'held', 'quarantined'].includes(values.state)) {
          return `--state must be active, deferred, held or quarantined`;
        }
        filter.state = values.state as QueueState;
      }
      if (values.search !== undefined) filter.search = values.search;
      if (values.limit !== undefined) {
        const n = Number(values.limit);
        if (!Number.isInteger(n) || n < 1) return '--limit must be a positive integer';
        filter.limit = n;
      }
      return { op: 'list', filter: filter satisfies QueueFilter };
    }
    case 'stats':
      return id === undefined ? { op: 'stats' } : `stats takes no argument (got "${id}")`;
    case 'show':
    case 'hold':
    case 'release':
    case 'retry':
    case 'delete':
      return id === undefined ? `${command} needs a message id` : { op: command, id };
    default:
      return `unknown command "${command}"`;
  }
}

/** `quarantine list | show ID | release ID | delete ID`: the same ops, limited to quarantined messages. */
function quarantineRequest(
  sub: string | undefined,
  id: string | undefined,
  values: ReturnType<typeof parse>['values'],
): ControlRequest | string {
  switch (sub) {
    case 'list': {
      if (values.state !== undefined) return 'quarantine list takes no --state';
      const request = toRequest('list', id, values);
      return typeof request === 'string' ? `quarantine ${request}` : { ...request, area: 'quarantine' };
    }
    case 'show':
    case 'release':
    case 'delete':
      return id === undefined ? `quarantine ${sub} needs a message id` : { op: sub, id, area: 'quarantine' };
    case undefined:
      return 'quarantine needs list, show, release or delete';
    default:
      return `unknown quarantine command "${sub}"`;
  }
}

// ---- output for people ----------------------------------------------------------

function table(rows: string[][], indent = ''): string {
  const widths: number[] = [];
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  return rows
    .map((row) =>
      `${indent}${row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')}`.trimEnd(),
    )
    .join('\n');
}

function size(n: number): string {
  if (n < 1024) return `${n}`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)}K`;
  return `${(n / 1024 / 1024).toFixed(1)}M`;
}

/** When the next attempt is: `due` once its time has come. */
function next(at: number | undefined, now: number): string {
  if (at === undefined) return '-';
  return at <= now ? 'due' : `in ${formatDuration(at - now)}`;
}

function when(at: number | undefined, now: number): string {
  if (at === undefined) return '-';
  if (at <= now) return at > now - 1000 ? 'now' : `${formatDuration(now - at)} ago`;
  return `in ${formatDuration(at - now)}`;
}

function stamp(at: number): string {
  return new Date(at)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
}

function replyText(r: ReplyRecord | undefined): string {
  if (!r) return '';
  return `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''} ${r.text}`.replace(/\s+/g, ' ').slice(0, 200);
}

function formatList(items: QueueSummary[], now: number): string {
  if (items.length === 0) return 'The queue is empty.\n';
  const rows = [['ID', 'AGE', 'SIZE', 'STATE', 'RCPTS', 'TRIES', 'NEXT', 'FROM']];
  for (const m of items) {
    rows.push([
      m.id,
      formatDuration(Math.max(0, now - m.receivedAt)),
      size(m.size),
      m.state,
      `${m.pending}/${m.recipients}`,
      String(m.attempts),
      m.state === 'held' || m.state === 'quarantined' ? m.state : next(m.nextAttemptAt, now),
      m.from === '' ? '<>' : m.from,
    ]);
  }
  const lines = [table(rows)];
  const replies = items.filter((m) => m.lastReply);
  if (replies.length > 0) {
    lines.push('', 'Last replies:');
    lines.push(
      table(
        replies.map((m) => [m.id, replyText(m.lastReply)]),
        '  ',
      ),
    );
  }
  lines.push('', `${items.length} message${items.length === 1 ? '' : 's'}`);
  return `${lines.join('\n')}\n`;
}

function formatQuarantine(items: QueueSummary[], now: number): string {
  if (items.length === 0) return 'The quarantine is empty.\n';
  const rows = [['ID', 'AGE', 'SIZE', 'RCPTS', 'REASON', 'FROM']];
  for (const m of items) {
    rows.push([
      m.id,
      formatDuration(Math.max(0, now - m.receivedAt)),
      size(m.size),
      String(m.recipients),
      m.quarantine ? `${m.quarantine.check} ${m.quarantine.result}` : '-',
      m.from === '' ? '<>' : m.from,
    ]);
  }
  return `${table(rows)}\n\n${items.length} quarantined message${items.length === 1 ? '' : 's'}\n`;
}

function formatDetail(m: QueueDetail, now: number): string {
  const src = m.source;
  const source =
    src === undefined
      ? '-'
      : src.kind === 'smtp'
        ? `SMTP from ${src.client}${src.helo ? ` (HELO ${src.helo})` : ''}${src.user ? ` user ${src.user}` : ''}${src.tid ? `, transaction ${src.tid}` : ''}`
        : src.kind === 'dsn'
          ? `delivery status notification about ${src.about}`
          : `queued by ${src.by}`;
  const head = table([
    ['Queue id:', m.id],
    ['State:', m.quarantine ? `quarantined (${m.quarantine.check} ${m.quarantine.result})` : m.state],
    ['Arrived:', `${stamp(m.receivedAt)} (${when(m.receivedAt, now)})`],
    ['From:', m.from === '' ? '<> (null reverse-path)' : `<${m.from}>`],
    ['Size:', `${m.size} octets`],
    ['Source:', source],
    ['Attributes:', JSON.stringify(m.attributes)],
  ]);
  const rcpts = table([
    ['STATUS', 'TRIES', 'NEXT', 'RECIPIENT', 'LAST REPLY'],
    ...m.recipientStates.map((r) => [
      r.status,
      String(r.attempts),
      r.status === 'pending' ? next(r.nextAttemptAt, now) : '-',
      r.address,
      `${replyText(r.reply)}${r.mta ? ` (${r.mta}${r.mtaAddress ? ` [${r.mtaAddress}]` : ''})` : ''}`,
    ]),
  ]);
  const headers = m.headers
    .replace(/\r\n$/, '')
    .split('\r\n')
    .map((l) => `  ${l}`)
    .join('\n');
  return `${head}\n\nRecipients:\n${rcpts.replace(/^/gm, '  ')}\n\nHeader section:\n${headers}\n`;
}

function formatStats(s: QueueStats, now: number): string {
  const lines = [
    table([
      [
        'Messages:',
        `${s.messages} (${s.deferred} deferred, ${s.held} held${s.quarantined > 0 ? `, ${s.quarantined} quarantined` : ''})`,
      ],
      ['Being delivered:', `${s.active} job${s.active === 1 ? '' : 's'}`],
      ['Pending recipients:', String(s.recipients.pending)],
      ['Size:', `${size(s.bytes)} octets`],
      ['Oldest:', s.oldestReceivedAt === undefined ? '-' : when(s.oldestReceivedAt, now)],
      ['Next attempt:', next(s.nextAttemptAt, now)],
    ]),
  ];
  if (s.destinations.length > 0) {
    lines.push('', 'Busiest destinations (pending recipients):');
    lines.push(
      table(
        s.destinations.map((d) => [d.destination, String(d.pending)]),
        '  ',
      ),
    );
  }
  return `${lines.join('\n')}\n`;
}
