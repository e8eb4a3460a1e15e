/**
 * The control channel the `mailframe queue` command uses to reach a running
 * server: a Unix socket (`<queue dir>/control.sock`, mode 0600) speaking JSON
 * lines. Each request line gets one response line:
 *
 *   {"op":"list","filter":{"state":"deferred"}}   -> {"ok":true,"result":[...]}
 *   {"op":"hold","id":"..."}                       -> {"ok":true,"result":true}
 *   {"op":"show","id":"nope"}                      -> {"ok":false,"code":"not-found","error":"..."}
 *   {"op":"release","id":"...","area":"quarantine"} -> only if it is quarantined
 *
 * The same `dispatch` serves the socket and the CLI's offline mode, so both
 * answer alike.
 */
import { chmod, readFile, unlink, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import type { Logger } from '../../core/types.ts';
import type { QueueFilter, QueueManagement, QueueState } from './types.ts';

export const CONTROL_OPS = ['list', 'show', 'hold', 'release', 'retry', 'delete', 'stats'] as const;
export type ControlOp = (typeof CONTROL_OPS)[number];

/** Ops that may be limited to the quarantine (`area: "quarantine"`, `mailframe queue quarantine ...`). */
const QUARANTINE_OPS: readonly ControlOp[] = ['list', 'show', 'release', 'delete'];

export interface ControlRequest {
  readonly op: ControlOp;
  readonly id?: string;
  readonly filter?: QueueFilter;
  /** `quarantine`: list only quarantined messages; show, release or delete one only if it is quarantined. */
  readonly area?: 'quarantine';
}

export type ControlResponse =
  | { readonly ok: true; readonly result: unknown }
  | { readonly ok: false; readonly code: 'not-found' | 'bad-request' | 'internal'; readonly error: string };

/** Linux allows 108 octets for a socket path, including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;
const MAX_REQUEST = 64 * 1024;
const STATES: readonly QueueState[] = ['active', 'deferred', 'held', 'quarantined'];

function badRequest(error: string): ControlResponse {
  return { ok: false, code: 'bad-request', error };
}

function parseFilter(raw: unknown): QueueFilter | string {
  if (raw === undefined) return {};
  if (typeof raw !== 'object' || raw === null) return 'filter must be an object';
  const f = raw as Record<string, unknown>;
  const out: { state?: QueueState; search?: string; limit?: number } = {};
  if (f['state'] !== undefined) {
    if (!STATES.includes(f['state'] as QueueState)) return `state must be one of ${STATES.join(', ')}`;
    out.state = f['state'] as QueueState;
  }
  if (f['search'] !== undefined) {
    if (typeof f['search'] !== 'string') return 'search must be a string';
    out.search = f['search'];
  }
  if (f['limit'] !== undefined) {
    if (!Number.isInteger(f['limit']) || (f['limit'] as number) < 1)
      return 'limit must be a positive integer';
    out.limit = f['limit'] as number;
  }
  return out;
}

/** Run one request against a queue. Never throws. */
export async function dispatch(queue: QueueManagement, raw: unknown): Promise<ControlResponse> {
  if (typeof raw !== 'object' || raw === null) return badRequest('request must be a JSON object');
  const req = raw as Record<string, unknown>;
  const op = req['op'];
  if (!CONTROL_OPS.includes(op as ControlOp))
    return badRequest(`op must be one of ${CONTROL_OPS.join(', ')}`);
  const area = req['area'];
  if (area !== undefined && area !== 'quarantine') return badRequest('area must be "quarantine"');
  const quarantine = area === 'quarantine';
  if (quarantine && !QUARANTINE_OPS.includes(op as ControlOp))
    return badRequest(`${String(op)} does not apply to the quarantine`);
  try {
    if (op === 'list') {
      const filter = parseFilter(req['filter']);
      if (typeof filter === 'string') return badRequest(filter);
      return {
        ok: true,
        result: await queue.list(quarantine ? { ...filter, state: 'quarantined' } : filter),
      };
    }
    if (op === 'stats') return { ok: true, result: await queue.stats() };
    const id = req['id'];
    if (typeof id !== 'string' || id === '') return badRequest(`${String(op)} needs a message id`);
    const notFound: ControlResponse = {
      ok: false,
      code: 'not-found',
      error: `no message ${id} in the ${quarantine ? 'quarantine' : 'queue'}`,
    };
    // Checked here, not by the store: a quarantined message changes state only through these same ops.
    if (quarantine && (await queue.show(id))?.state !== 'quarantined') return notFound;
    if (op === 'show') {
      const detail = await queue.show(id);
      return detail ? { ok: true, result: detail } : notFound;
    }
    const done =
      op === 'hold'
        ? await queue.hold(id)
        : op === 'release'
          ? await queue.release(id)
          : op === 'retry'
            ? await queue.retryNow(id)
            : await queue.delete(id);
    return done ? { ok: true, result: true } : notFound;
  } catch (err) {
    return { ok: false, code: 'internal', error: err instanceof Error ? err.message : String(err) };
  }
}

/** Whether something answers on the socket. */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/**
 * Listen on `path`. A socket file left by a crashed server is replaced; one
 * that still answers means another server runs on this queue: that throws.
 */
export async function listenControl(
  path: string,
  queue: QueueManagement,
  log: Logger,
): Promise<ControlServer> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new Error(
      `control socket path ${path} is longer than ${MAX_SOCKET_PATH} octets: use a shorter queue "dir" or set "controlSocket": false`,
    );
  }
  if (await socketAnswers(path)) {
    throw new Error(`another server is using this queue (its control socket ${path} answers)`);
  }
  await unlink(path).catch(() => {});
  const server: Server = createServer((socket) => {
    let buffer = '';
    // Answers go out in request order even when requests are pipelined.
    let answered: Promise<void> = Promise.resolve();
    socket.setEncoding('utf8');
    socket.on('error', () => {});
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_REQUEST && !buffer.includes('\n')) {
        socket.end(`${JSON.stringify(badRequest('request too long'))}\n`);
        return;
      }
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.trim() === '') continue;
        let req: unknown;
        try {
          req = JSON.parse(line);
        } catch {
          socket.write(`${JSON.stringify(badRequest('not JSON'))}\n`);
          continue;
        }
        const result = dispatch(queue, req);
        answered = answered.then(async () => {
          const res = await result;
          const { op, id, area } = req as ControlRequest;
          if (res.ok && op !== 'list' && op !== 'show' && op !== 'stats')
            log.info({ op, qid: id, ...(area === undefined ? {} : { area }) }, 'queue control');
          if (!socket.destroyed) socket.write(`${JSON.stringify(res)}\n`);
        });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path }, () => resolve());
  });
  server.on('error', (err) => log.error({ err }, 'queue control socket error'));
  await chmod(path, 0o600).catch(() => {});
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.unref();
      }),
  };
}

/**
 * Send one request to a running server. Undefined when nothing listens on
 * `path` (no server): the caller may then work on the files directly.
 */
export function controlRequest(
  path: string,
  req: ControlRequest,
  timeoutMs = 10_000,
): Promise<ControlResponse | undefined> {
  return new Promise((resolve, reject) => {
    const s = connect({ path });
    let buffer = '';
    let connected = false;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer on ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.once('connect', () => {
      connected = true;
      s.write(`${JSON.stringify(req)}\n`);
    });
    s.on('data', (chunk: string) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      s.destroy();
      try {
        resolve(JSON.parse(buffer.slice(0, nl)) as ControlResponse);
      } catch (err) {
        reject(err);
      }
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!connected && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')) resolve(undefined);
      else reject(err);
    });
    s.once('close', () => {
      clearTimeout(timer);
      if (connected && !buffer.includes('\n')) reject(new Error(`${path} closed without an answer`));
    });
  });
}

// ---- the pid file: tells the CLI a server runs even without a control socket ----

export async function writePidFile(path: string): Promise<void> {
  await writeFile(path, `${process.pid}\n`, { mode: 0o600 });
}

export async function removePidFile(path: string): Promise<void> {
  const pid = await readPid(path);
  if (pid === process.pid) await unlink(path).catch(() => {});
}

export async function readPid(path: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt(await readFile(path, 'utf8'), 10);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The pid in `path`, if that process is alive. */
export async function livePid(path: string): Promise<number | undefined> {
  const pid = await readPid(path);
  if (pid === undefined) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}
