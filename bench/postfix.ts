/**
 * A throw-away Postfix instance for the outbound bench: its own main.cf,
 * master.cf and transport table in a temporary config_directory, its own
 * queue_directory and data_directory, `postfix -c DIR start` as root. The
 * system's /etc/postfix is only read (postfix-files, for the queue's layout)
 * and nothing listens beyond one smtpd on a loopback port.
 *
 * Every message the smtpd accepts goes on hold (`check_client_access
 * static:HOLD`); `unhold()` moves them all to the deferred queue
 * (`postsuper -H ALL`) and `kick()` asks the queue manager to scan it
 * (`postkick public qmgr D`), so delivery is measured alone, from the kick. Each destination domain is
 * sent to its sink by the transport table (`smtp:[127.0.0.x]:PORT`): Postfix
 * does no DNS here, which favours it (the MX side resolves MX and A records).
 * Postfix's own defaults stand otherwise: 20 connections per destination, 100
 * smtp processes, connection caching on demand.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { childrenCpuMs, treeCpuMs } from './proc.ts';
import { findProgram, freePort } from './servers.ts';
import { SmtpConn } from './smtp-conn.ts';

const run = promisify(execFile);

export const POSTFIX_MISSING = 'skipped: Postfix not installed (sudo bash bench/install-peers.sh)';

/** Why Postfix cannot run here, or undefined. */
export function postfixUnavailable(): string | undefined {
  for (const p of ['postfix', 'postsuper', 'postkick']) if (!findProgram(p)) return POSTFIX_MISSING;
  if (process.getuid?.() !== 0) return 'skipped: running Postfix needs root';
  return undefined;
}

export interface PostfixRoute {
  readonly domain: string;
  readonly address: string;
}

export interface PostfixInstance {
  readonly pid: number;
  readonly host: string;
  readonly port: number;
  /** Messages on hold (queued and waiting for `release`). */
  held(): number;
  /** Messages anywhere in the queue but hold (incoming, active, deferred). */
  pending(): number;
  /** Move every held message to the deferred queue (`postsuper -H ALL`); nothing is delivered yet. */
  unhold(): Promise<void>;
  /** Start delivering the released messages: the queue manager scans the deferred queue. */
  kick(): Promise<void>;
  /** CPU ms of the master process and every Postfix daemon it started (living or reaped). */
  cpuMs(): number;
  /** CPU ms of the logging daemon (postlogd, writing the mail log), part of `cpuMs`. */
  logCpuMs(): number;
  /** The last lines of Postfix's log. */
  logTail(): string;
  /** `postfix stop` (all connections close), then remove every file. */
  stop(): Promise<void>;
}

function countFiles(dir: string): number {
  let n = 0;
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) n += e.isDirectory() ? countFiles(join(dir, e.name)) : 1;
  return n;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function mainCf(root: string, conf: string): string {
  return `# mailframe outbound bench: a throw-away instance (${root})
compatibility_level = 3.6
queue_directory = ${root}/queue
data_directory = ${root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.local
mydomain = bench.local
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
transport_maps = texthash:${conf}/transport
smtpd_relay_restrictions = permit_mynetworks, reject
# Hold everything that arrives: the bench releases it all at once.
smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject
maillog_file = ${root}/maillog
maillog_file_prefixes = ${root}
biff = no
`;
}

/** Debian's master.cf without chroot, TLS or local delivery, and one smtpd on `host:port`. */
function masterCf(host: string, port: number): string {
  return `${host}:${port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
`;
}

async function waitGreeting(host: string, port: number, pid: number, log: () => string): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    if (!alive(pid)) throw new Error(`postfix master exited:\n${log()}`);
    try {
      const { conn, greeting } = await SmtpConn.open(host, port, 2000);
      await conn.quit().catch(() => {});
      if (greeting === 220) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`postfix smtpd not answering on ${host}:${port}:\n${log()}`);
    await sleep(100);
  }
}

export async function startPostfix(
  routes: readonly PostfixRoute[],
  sinkPort: number,
): Promise<PostfixInstance> {
  const root = await mkdtemp(join(tmpdir(), 'mailframe-bench-postfix-'));
  // The daemons run as the postfix user and must reach their directories.
  await chmod(root, 0o755);
  const conf = join(root, 'etc');
  const data = join(root, 'data');
  await mkdir(conf);
  await mkdir(join(root, 'queue'));
  await mkdir(data);
  const { uid, gid } = postfixIds();
  await chown(data, uid, gid);
  const host = '127.0.0.1';
  const port = await freePort();
  await writeFile(join(conf, 'main.cf'), mainCf(root, conf));
  await writeFile(join(conf, 'master.cf'), masterCf(host, port));
  await writeFile(
    join(conf, 'transport'),
    routes.map((r) => `${r.domain} smtp:[${r.address}]:${sinkPort}\n`).join(''),
  );
  const logFile = join(root, 'maillog');
  const logTail = () => {
    try {
      return readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n');
    } catch {
      return '(no log)';
    }
  };
  const pidFile = join(root, 'queue', 'pid', 'master.pid');
  let pid = 0;
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= shutDown();
    return stopped;
  };
  const shutDown = async () => {
    await run(findProgram('postfix') ?? 'postfix', ['-c', conf, 'stop']).catch(() => {});
    const until = Date.now() + 15_000;
    while (pid && alive(pid) && Date.now() < until) await sleep(100);
    if (pid && alive(pid)) {
      await run(findProgram('postfix') ?? 'postfix', ['-c', conf, 'abort']).catch(() => {});
      await sleep(500);
      // The master this instance started; its daemons exit when it is gone.
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    await rm(root, { recursive: true, force: true });
  };
  try {
    await run(findProgram('postfix') ?? 'postfix', ['-c', conf, 'start']).catch((err: unknown) => {
      throw new Error(
        `postfix start failed: ${err instanceof Error ? err.message : String(err)}\n${logTail()}`,
      );
    });
    const until = Date.now() + 10_000;
    while (!existsSync(pidFile) && Date.now() < until) await sleep(50);
    pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!pid) throw new Error(`postfix: no master pid in ${pidFile}\n${logTail()}`);
    await waitGreeting(host, port, pid, logTail);
  } catch (err) {
    await stop();
    throw err;
  }
  const queue = (name: string) => countFiles(join(root, 'queue', name));
  return {
    pid,
    host,
    port,
    held: () => queue('hold'),
    pending: () => queue('incoming') + queue('active') + queue('deferred') + queue('maildrop'),
    async unhold() {
      await run(findProgram('postsuper') ?? 'postsuper', ['-c', conf, '-H', 'ALL']);
    },
    async kick() {
      // The queue manager looks at the deferred queue only every queue_run_delay: ask for a scan now.
      // Now and then postkick dies on a signal without a word (the trigger socket closed under it);
      // a scan request is idempotent, so ask again.
      for (let attempt = 1; ; attempt++) {
        try {
          await run(findProgram('postkick') ?? 'postkick', ['-c', conf, 'public', 'qmgr', 'D']);
          return;
        } catch (err) {
          if (attempt >= 5) throw err;
          await sleep(20);
        }
      }
    },
    cpuMs: () => treeCpuMs(pid),
    logCpuMs: () => childrenCpuMs(pid, 'postlogd'),
    logTail,
    stop,
  };
}

function postfixIds(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postfix:'));
  const f = line?.split(':');
  if (!f) throw new Error('no postfix user in /etc/passwd (is Postfix installed?)');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}
