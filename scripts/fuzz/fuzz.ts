/**
 * The network fuzzer: starts the server in a child process, plays generated
 * sessions against it on `connections` parallel connections for a bounded
 * time and count, health-checks it every few seconds, samples its memory,
 * and stops at the first fault: a crash (exit, stderr, error log line), a
 * hang (a session the server neither answers nor closes; a failed health
 * check), a malformed reply line, or sustained memory growth past a bound
 * after warm-up.
 */
import { type Bounds, healthCheck, runSession } from './client.ts';
import { generateSession } from './generate.ts';
import { HOST, SERVER_TIMEOUTS, startFuzzServer } from './server.ts';
import { type Session, showSession } from './session.ts';

export interface FuzzOptions {
  readonly seed: number;
  /** Stop starting sessions after this long. */
  readonly durationMs: number;
  /** Sessions in flight at once. */
  readonly connections: number;
  /** Stop after this many sessions (default: no limit but time). */
  readonly maxSessions?: number;
  /** The first session's number (a replay runs one session from its number). */
  readonly firstSession?: number;
  /** Allowed growth of the server's resident memory after warm-up, in MiB. */
  readonly rssGrowthMiB?: number;
  /** Progress lines. */
  readonly log?: (line: string) => void;
  /** Ends the run early (Ctrl-C): sessions stop, the server is stopped and its files removed. */
  readonly signal?: AbortSignal;
  /** Called with the server's pid once it answers (tests use it to check that a crash is caught). */
  readonly onServerStarted?: (pid: number) => void;
}

export type FaultKind = 'crash' | 'hang' | 'unhealthy' | 'memory' | 'protocol';

export interface FuzzResult {
  readonly seed: number;
  readonly sessions: number;
  readonly replies: number;
  readonly healthChecks: number;
  readonly rssMiB: { readonly afterWarmUp?: number; readonly max?: number; readonly end?: number };
  readonly fault?: {
    readonly kind: FaultKind;
    readonly detail: string;
    /** The sessions that may have caused it, newest last. */
    readonly suspects: readonly Session[];
  };
}

const MiB = 1024 * 1024;
/** A reply wait; long enough for a loaded machine, and not a fault when it runs out. */
const REPLY_WAIT_MS = 2500;
/** After the last step and QUIT the server must close within this: its own timeouts are far shorter. */
const CLOSE_WAIT_MS = 4 * (SERVER_TIMEOUTS.command + SERVER_TIMEOUTS.data);
const HEALTH_EVERY_MS = 3000;
const HEALTH_REPLY_MS = 15_000;
const RSS_EVERY_MS = 500;
/** Consecutive samples over the bound that make growth "sustained". */
const RSS_SUSTAINED = 8;

export async function runFuzz(opts: FuzzOptions): Promise<FuzzResult> {
  const log = opts.log ?? (() => {});
  const first = opts.firstSession ?? 0;
  const maxSessions = opts.maxSessions ?? Number.POSITIVE_INFINITY;
  const growthBound = (opts.rssGrowthMiB ?? 256) * MiB;
  const bounds: Bounds = { replyWaitMs: REPLY_WAIT_MS, closeWaitMs: CLOSE_WAIT_MS };
  const server = await startFuzzServer();
  log(`fuzz: seed ${opts.seed}, server pid ${server.pid}, ports ${JSON.stringify(server.ports)}`);
  opts.onServerStarted?.(server.pid);

  const stop = new AbortController();
  opts.signal?.addEventListener('abort', () => stop.abort(), { once: true });
  const started = Date.now();
  const warmUpUntil = started + Math.max(3000, opts.durationMs * 0.2);
  let next = first;
  let sessions = 0;
  let replies = 0;
  let healthChecks = 0;
  const inFlight = new Map<number, Session>();
  const recent: Session[] = [];
  let fault: FuzzResult['fault'];
  const rss: { afterWarmUp?: number; max?: number; end?: number } = {};

  const fail = (kind: FaultKind, detail: string, suspects: readonly Session[]) => {
    if (fault !== undefined) return;
    fault = { kind, detail, suspects };
    stop.abort();
  };
  const checkServer = () => {
    const f = server.fault();
    if (f !== undefined) fail('crash', f, suspects());
  };
  /** A hang or failed health check may be a crash whose exit is still on its way: that is the better report. */
  const failUnlessCrashed = async (kind: FaultKind, detail: string, blamed: readonly Session[]) => {
    await new Promise((r) => setTimeout(r, 500));
    checkServer();
    fail(kind, detail, blamed);
  };
  /** The sessions in flight and the two that finished last: a crash is most likely one of theirs. */
  const suspects = () => [...recent.slice(-2), ...inFlight.values()];
  const timeLeft = () => Date.now() - started < opts.durationMs;

  const worker = async () => {
    while (!stop.signal.aborted && timeLeft() && next - first < maxSessions) {
      const session = generateSession(opts.seed, next++);
      inFlight.set(session.index, session);
      const outcome = await runSession(session, HOST, server.ports[session.listener], bounds, stop.signal);
      inFlight.delete(session.index);
      recent.push(session);
      if (recent.length > 8) recent.shift();
      sessions++;
      replies += outcome.replies;
      checkServer();
      if (outcome.hang !== undefined) await failUnlessCrashed('hang', outcome.hang, [session]);
      if (outcome.malformed !== undefined) {
        fail(
          'protocol',
          `the server sent a line that is not a reply line: ${JSON.stringify(outcome.malformed)}`,
          [session],
        );
      }
    }
  };

  const health = async () => {
    while (!stop.signal.aborted && (timeLeft() || inFlight.size > 0)) {
      await sleep(HEALTH_EVERY_MS, stop.signal);
      if (stop.signal.aborted) break;
      const problem = await healthCheck(HOST, server.ports.mx, HEALTH_REPLY_MS);
      healthChecks++;
      checkServer();
      if (problem !== undefined) await failUnlessCrashed('unhealthy', `health check: ${problem}`, suspects());
    }
  };

  let over = 0;
  let baseline: number | undefined;
  const memory = async () => {
    while (!stop.signal.aborted && (timeLeft() || inFlight.size > 0)) {
      await sleep(RSS_EVERY_MS, stop.signal);
      const now = await server.rss();
      if (now === undefined) return; // no /proc here: no memory check
      rss.max = Math.max(rss.max ?? 0, now / MiB);
      rss.end = now / MiB;
      if (Date.now() < warmUpUntil) continue;
      rss.afterWarmUp ??= now / MiB;
      baseline = Math.min(baseline ?? now, now);
      over = now - baseline > growthBound ? over + 1 : 0;
      if (over >= RSS_SUSTAINED) {
        fail(
          'memory',
          `resident memory grew from ${(baseline / MiB).toFixed(0)} MiB to ${(now / MiB).toFixed(0)} MiB (bound: +${growthBound / MiB} MiB) for ${RSS_SUSTAINED} samples in a row`,
          [],
        );
      }
    }
  };

  const progress = setInterval(() => {
    log(
      `fuzz: ${sessions} sessions, ${replies} replies, ${healthChecks} health checks, rss ${rss.end?.toFixed(0) ?? '?'} MiB`,
    );
  }, 10_000);
  try {
    const workers = Array.from({ length: Math.max(1, opts.connections) }, worker);
    const watchers = [health(), memory()];
    await Promise.all(workers);
    // Whatever the last sessions did, the server must still answer a fresh one.
    if (fault === undefined) {
      const problem = await healthCheck(HOST, server.ports.mx, HEALTH_REPLY_MS);
      healthChecks++;
      checkServer();
      if (problem !== undefined)
        await failUnlessCrashed('unhealthy', `final health check: ${problem}`, recent.slice(-2));
    }
    stop.abort();
    await Promise.all(watchers);
    checkServer();
  } finally {
    clearInterval(progress);
    stop.abort();
    await server.stop();
  }
  const result: FuzzResult = { seed: opts.seed, sessions, replies, healthChecks, rssMiB: rss };
  return fault === undefined ? result : { ...result, fault };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

/** A report of the run; for a fault, the seed, the suspect sessions and how to replay each. */
export function formatResult(r: FuzzResult): string {
  const mem = r.rssMiB;
  const memText =
    mem.max === undefined
      ? 'memory not sampled'
      : `rss after warm-up ${mem.afterWarmUp?.toFixed(0) ?? '?'} MiB, max ${mem.max.toFixed(0)} MiB, end ${mem.end?.toFixed(0)} MiB`;
  const head = `fuzz: seed ${r.seed}: ${r.sessions} sessions, ${r.replies} replies, ${r.healthChecks} health checks, ${memText}`;
  if (r.fault === undefined) return `${head}\nfuzz: OK`;
  const lines = [head, `fuzz: FAILED (${r.fault.kind}): ${r.fault.detail}`];
  for (const s of r.fault.suspects) {
    lines.push('', showSession(s), `  replay: npm run fuzz -- --seed ${r.seed} --replay ${s.index}`);
  }
  return lines.join('\n');
}
