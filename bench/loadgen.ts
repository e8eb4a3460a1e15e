/**
 * SMTP load generator on raw sockets: N connections share a message budget,
 * each sending transactions back to back (pipelined or one command at a
 * time), optionally one message per connection (churn), optionally while
 * holding extra idle connections open. Measures messages/s, MB/s, latency from
 * MAIL to the final 250, and errors.
 *
 *   npx tsx bench/loadgen.ts --port 2525 --connections 10 --messages 20000 --size 2048 [--pipelining]
 */
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildEnvelope, buildMessage, type Envelope, type MessageData } from './message.ts';
import { SmtpConn } from './smtp-conn.ts';
import { percentile } from './stats.ts';

export interface LoadOptions {
  readonly host?: string;
  readonly port: number;
  /** Concurrent sending connections. */
  readonly connections: number;
  /** Messages to send in total. */
  readonly messages: number;
  /** Octets per message, headers included. */
  readonly size: number;
  /** Recipients per message. */
  readonly recipients?: number;
  /** Send MAIL, RCPTs and DATA in one write (the server should advertise PIPELINING). */
  readonly pipelining?: boolean;
  /** One message per connection: connect, EHLO, one transaction, QUIT. */
  readonly churn?: boolean;
  /** Extra connections opened (and EHLO'd) before the load and held idle during it. */
  readonly idle?: number;
  /** Stop taking new messages after this long (ms); in-flight ones finish. */
  readonly timeLimitMs?: number;
  /** Recipient domain (the server must accept it). */
  readonly domain?: string;
  /** A prebuilt message sent instead of one built from `size` (bench/auth.ts: a DKIM-signed one). */
  readonly message?: MessageData;
  /** Called once the idle connections are open, right before the load starts. */
  readonly beforeLoad?: () => void | Promise<void>;
  /** Called right after the last transaction, before the idle connections are closed. */
  readonly afterLoad?: () => void | Promise<void>;
}

export interface LoadResult {
  /** Messages answered 2xx after their data. */
  readonly messages: number;
  readonly attempted: number;
  readonly octetsPerMessage: number;
  readonly elapsedMs: number;
  readonly msgsPerSec: number;
  /** Megabytes (10^6 octets) of message data accepted per second. */
  readonly mbPerSec: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** Non-2xx/3xx replies plus connection failures. */
  readonly errors: number;
  /** Error replies by code, and connection failures by cause. */
  readonly errorDetail: Readonly<Record<string, number>>;
  /** True if the time limit stopped the run before every message was sent. */
  readonly capped: boolean;
  /** True if connections were still waiting for a reply well after the time limit and were cut. */
  readonly stalled: boolean;
  readonly idle: { readonly requested: number; readonly opened: number; readonly closedEarly: number };
}

interface Run {
  readonly opts: Required<Omit<LoadOptions, 'beforeLoad' | 'afterLoad' | 'timeLimitMs' | 'message'>>;
  readonly envelope: Envelope;
  readonly message: MessageData;
  readonly ehlo: Buffer;
  readonly latencies: Float64Array;
  readonly deadline: number;
  readonly live: Set<SmtpConn>;
  taken: number;
  done: number;
  errors: number;
  readonly errorDetail: Record<string, number>;
  capped: boolean;
  stalled: boolean;
  /** When the last message was accepted (the throughput window ends there, except with churn). */
  lastDone: number;
}

function countError(run: Run, key: string): void {
  run.errors++;
  run.errorDetail[key] = (run.errorDetail[key] ?? 0) + 1;
}

function take(run: Run): boolean {
  if (run.taken >= run.opts.messages) return false;
  if (performance.now() > run.deadline) {
    run.capped = true;
    return false;
  }
  run.taken++;
  return true;
}

/** Check reply codes; each 4xx/5xx (or unparsable) counts as an error. True if all were 2xx/3xx. */
function good(run: Run, codes: readonly number[]): boolean {
  let ok = true;
  for (const c of codes) {
    if (c < 200 || c >= 400) {
      countError(run, String(c));
      ok = false;
    }
  }
  return ok;
}

async function openSession(run: Run): Promise<SmtpConn> {
  const { conn, greeting } = await SmtpConn.open(run.opts.host, run.opts.port);
  if (!good(run, [greeting])) {
    conn.destroy();
    throw new Error(`greeting ${greeting}`);
  }
  conn.waitingFor = 'EHLO';
  conn.write(run.ehlo);
  if (!good(run, await conn.expect(1))) {
    await conn.quit().catch(() => {});
    throw new Error('EHLO refused');
  }
  return conn;
}

async function sendData(conn: SmtpConn, msg: MessageData): Promise<void> {
  if (msg.buffer) {
    conn.write(msg.buffer);
    return;
  }
  const s = msg.stream!;
  conn.write(s.head);
  for (let i = 0; i < s.repeat; i++) {
    if (!conn.write(s.chunk)) await conn.drained();
  }
  conn.write(s.tail);
}

/** One transaction; true if the message was accepted. */
async function transaction(run: Run, conn: SmtpConn): Promise<boolean> {
  const { envelope } = run;
  const t0 = performance.now();
  let dataCode: number;
  if (run.opts.pipelining) {
    conn.waitingFor = 'MAIL/RCPT/DATA';
    conn.write(envelope.pipelined);
    const codes = await conn.expect(envelope.rcpts + 2);
    good(run, codes.slice(0, -1));
    dataCode = codes[codes.length - 1] ?? 0;
  } else {
    let ok = true;
    for (let i = 0; i < envelope.steps.length - 1 && ok; i++) {
      conn.waitingFor = i === 0 ? 'MAIL' : 'RCPT';
      conn.write(envelope.steps[i]!);
      ok = good(run, await conn.expect(1));
      // A refused recipient does not stop the transaction; a refused MAIL does.
      if (i > 0) ok = true;
    }
    if (!ok) {
      conn.waitingFor = 'RSET';
      conn.write(RSET);
      await conn.expect(1);
      return false;
    }
    conn.waitingFor = 'DATA';
    conn.write(envelope.steps[envelope.steps.length - 1]!);
    dataCode = (await conn.expect(1))[0] ?? 0;
  }
  if (dataCode !== 354) {
    good(run, [dataCode]);
    conn.waitingFor = 'RSET';
    conn.write(RSET);
    await conn.expect(1);
    return false;
  }
  conn.waitingFor = 'end of data';
  await sendData(conn, run.message);
  const [final = 0] = await conn.expect(1);
  if (!good(run, [final])) return false;
  const now = performance.now();
  run.latencies[run.done++] = now - t0;
  run.lastDone = now;
  return true;
}

async function worker(run: Run): Promise<void> {
  let failures = 0;
  while (run.taken < run.opts.messages && performance.now() <= run.deadline) {
    let conn: SmtpConn;
    try {
      conn = await openSession(run);
    } catch (err) {
      if (err instanceof Error && err.name === 'ConnectionLost') countError(run, err.message);
      if (++failures >= 5) return; // the server is refusing us: give up on this slot
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    failures = 0;
    run.live.add(conn);
    try {
      while (take(run)) {
        await transaction(run, conn);
        if (run.opts.churn) break;
      }
      await conn.quit();
    } catch (err) {
      countError(run, err instanceof Error ? err.message : String(err));
      conn.destroy();
    } finally {
      run.live.delete(conn);
    }
  }
}

interface IdleSet {
  readonly conns: SmtpConn[];
  closedEarly: number;
  finished: boolean;
}

/**
 * Open `n` idle sessions, `parallel` at a time, giving up on the rest after `limitMs`;
 * count the ones the server closes before we do.
 */
async function openIdle(run: Run, n: number, limitMs: number, parallel = 200): Promise<IdleSet> {
  const set: IdleSet = { conns: [], closedEarly: 0, finished: false };
  const until = performance.now() + limitMs;
  let next = 0;
  const opener = async () => {
    while (next < n && performance.now() < until) {
      next++;
      try {
        const conn = await openSession(run);
        set.conns.push(conn);
        conn.socket.once('close', () => {
          if (!set.finished) set.closedEarly++;
        });
      } catch (err) {
        // Refusals by reply were counted by their code already.
        if (err instanceof Error && err.name === 'ConnectionLost') countError(run, `idle: ${err.message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, opener));
  return set;
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const opts = {
    host: options.host ?? '127.0.0.1',
    port: options.port,
    connections: Math.max(1, options.connections),
    messages: options.messages,
    size: options.size,
    recipients: options.recipients ?? 1,
    pipelining: options.pipelining ?? false,
    churn: options.churn ?? false,
    idle: options.idle ?? 0,
    domain: options.domain ?? 'example.com',
  };
  const message = options.message ?? buildMessage(opts.size);
  const run: Run = {
    opts,
    envelope: buildEnvelope(opts.recipients, opts.domain),
    message,
    ehlo: Buffer.from('EHLO loadgen.bench.example\r\n'),
    latencies: new Float64Array(opts.messages),
    deadline: Number.POSITIVE_INFINITY,
    live: new Set(),
    taken: 0,
    done: 0,
    errors: 0,
    errorDetail: {},
    capped: false,
    stalled: false,
    lastDone: 0,
  };
  const limit = options.timeLimitMs ?? Number.POSITIVE_INFINITY;
  const idle = opts.idle > 0 ? await openIdle(run, opts.idle, limit) : undefined;
  await options.beforeLoad?.();
  const start = performance.now();
  (run as { deadline: number }).deadline = start + limit;
  // A stalled server must not hang the bench: destroy what is still open a while after the limit.
  const hardStop = Number.isFinite(limit)
    ? setTimeout(
        () => {
          run.stalled = run.live.size > 0;
          for (const c of run.live) c.destroy(`no reply to ${c.waitingFor} (hard stop)`);
        },
        limit + Math.max(10_000, limit / 4),
      )
    : undefined;
  await Promise.all(Array.from({ length: Math.min(opts.connections, opts.messages) }, () => worker(run)));
  // With churn, closing the connection is part of each message's cost; otherwise the final QUIT is not.
  const end = opts.churn || run.lastDone === 0 ? performance.now() : run.lastDone;
  const elapsedMs = end - start;
  if (hardStop) clearTimeout(hardStop);
  await options.afterLoad?.();
  let opened = 0;
  let closedEarly = 0;
  if (idle) {
    opened = idle.conns.length;
    closedEarly = idle.closedEarly;
    if (closedEarly > 0) {
      run.errors += closedEarly;
      run.errorDetail['idle closed early'] = closedEarly;
    }
    idle.finished = true;
    for (const c of idle.conns) c.destroy();
  }
  const lat = run.latencies.subarray(0, run.done).sort();
  const secs = elapsedMs / 1000;
  return {
    messages: run.done,
    attempted: run.taken,
    octetsPerMessage: message.size,
    elapsedMs,
    msgsPerSec: secs > 0 ? run.done / secs : 0,
    mbPerSec: secs > 0 ? (run.done * message.size) / 1e6 / secs : 0,
    latencyMs: {
      p50: percentile(lat, 0.5),
      p99: percentile(lat, 0.99),
      max: lat[lat.length - 1] ?? Number.NaN,
    },
    errors: run.errors,
    errorDetail: run.errorDetail,
    capped: run.capped,
    stalled: run.stalled,
    idle: { requested: opts.idle, opened, closedEarly },
  };
}

const RSET = Buffer.from('RSET\r\n');

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '2525' },
      connections: { type: 'string', short: 'c', default: '10' },
      messages: { type: 'string', short: 'n', default: '20000' },
      size: { type: 'string', short: 's', default: '2048' },
      recipients: { type: 'string', short: 'r', default: '1' },
      pipelining: { type: 'boolean', short: 'p', default: false },
      churn: { type: 'boolean', default: false },
      idle: { type: 'string', default: '0' },
      'time-limit': { type: 'string', default: '60' },
      domain: { type: 'string', default: 'example.com' },
      pid: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'Usage: npx tsx bench/loadgen.ts [--host H] [--port P] [-c CONNS] [-n MESSAGES] [-s SIZE] [-r RCPTS]\n' +
        '       [--pipelining] [--churn] [--idle N] [--time-limit SECONDS] [--domain D] [--pid SERVER_PID]\n',
    );
    return;
  }
  const { sampleProc, RssPoller } = await import('./proc.ts');
  const pid = values.pid === undefined ? undefined : Number(values.pid);
  let cpu0 = 0;
  let cpu1 = 0;
  const poller = pid === undefined ? undefined : new RssPoller(pid);
  const result = await runLoad({
    host: values.host,
    port: Number(values.port),
    connections: Number(values.connections),
    messages: Number(values.messages),
    size: Number(values.size),
    recipients: Number(values.recipients),
    pipelining: values.pipelining,
    churn: values.churn,
    idle: Number(values.idle),
    timeLimitMs: Number(values['time-limit']) * 1000,
    domain: values.domain,
    beforeLoad: () => {
      if (pid !== undefined) cpu0 = sampleProc(pid).cpuMs;
      poller?.start();
    },
    afterLoad: () => {
      if (pid !== undefined) cpu1 = sampleProc(pid).cpuMs;
      poller?.stop();
    },
  });
  const server =
    pid === undefined
      ? {}
      : {
          serverCpuMsPerMsg: result.messages ? (cpu1 - cpu0) / result.messages : 0,
          serverPeakRssMb: (poller?.peakKb ?? 0) / 1024,
        };
  process.stdout.write(`${JSON.stringify({ ...result, ...server }, null, 2)}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`loadgen: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
