/**
 * Crash testing the queue: a real server in a child process, SMTP clients
 * over real sockets recording which messages got a 250, SIGKILL at chosen
 * moments, restarts on the same queue, and a check of the queue files
 * against what was acknowledged. Shared by test/crash/crash.test.ts (small)
 * and bench/crash.ts (large).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runQueueCli } from '../../bin/queue-cli.ts';
import { connectClient, type SmtpClient } from '../../core/testkit.ts';
import { scanRecords } from '../../plugins/queue-fs/journal-record.ts';
import type { QueueEnvelope } from '../../plugins/queue-fs/queue-file.ts';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/**
 * Where a phase's SIGKILL lands: in the middle of a message's data, just
 * after its final dot (while the server stores it), just after a 250, or at a
 * random moment.
 */
export type KillMode = 'during-data' | 'after-dot' | 'after-ack' | 'random';

export interface CrashOptions {
  /** Messages to attempt in all (split evenly over the phases). */
  readonly messages: number;
  /** Concurrent SMTP connections. */
  readonly senders: number;
  /** One phase per entry ends with a SIGKILL of that kind; a last phase runs without. */
  readonly kills: readonly KillMode[];
  /** Every n-th message is about 300 KB, so it spills to the spool file (0: none). */
  readonly bigEvery?: number;
  readonly seed?: number;
  readonly fsync?: boolean;
  /**
   * Deliver to Maildir (deliver-maildir, one mailbox per recipient) while the
   * kills happen, and count the copies there (default true). Off: no delivery
   * plugin, every message stays queued.
   */
  readonly maildir?: boolean;
  readonly log?: (line: string) => void;
}

type MessageState = 'pending' | 'in-data' | 'dot-sent' | 'acked' | 'in-flight' | 'aborted' | 'rejected';

interface Sent {
  readonly n: number;
  readonly from: string;
  readonly to: readonly string[];
  readonly data: Buffer;
  state: MessageState;
  queueId?: string;
}

export interface CrashReport {
  readonly attempted: number;
  /** Got 250: must be in the queue exactly once, intact. */
  readonly acked: number;
  /** Final dot sent, no reply before the kill: may or may not be queued. */
  readonly inFlight: number;
  readonly inFlightPresent: number;
  /** The kill came before the final dot: must not be queued. */
  readonly aborted: number;
  readonly rejected: number;
  readonly lost: number;
  readonly duplicates: number;
  readonly damaged: number;
  readonly unexpected: number;
  readonly corruptFiles: number;
  readonly tmpLeftovers: number;
  /** Recipients delivered to their Maildir (copies of acknowledged messages, counted once). */
  readonly delivered: number;
  /** Recipients whose mailbox holds the same message more than once. */
  readonly maildirDuplicates: number;
  /** Files left in the Maildirs' tmp/ after the last restart. */
  readonly maildirTmpLeftovers: number;
  /** Recipients of acknowledged messages neither delivered nor queued at the end (counted in `lost`). */
  readonly undelivered: number;
  readonly kills: number;
  /** ms from spawn to first greeting, per start. */
  readonly startTimes: readonly number[];
  /** The CLI's `list --json` on the restarted server agreed with the files. */
  readonly cliAgrees: boolean;
  readonly elapsedMs: number;
  readonly problems: readonly string[];
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .-';

function makeMessage(n: number, random: () => number, big: boolean): Sent {
  const from = `sender${n % 7}@example.net`;
  const to = random() < 0.3 ? [`r${n}a@example.com`, `r${n}b@example.com`] : [`r${n}@example.com`];
  const lines = [
    `X-Crash-Id: ${n}`,
    `From: <${from}>`,
    `To: <${to[0]}>`,
    `Subject: crash test message ${n}`,
    `Message-ID: <crash-${n}@example.net>`,
    '',
  ];
  let size = 0;
  const target = big ? 300_000 + Math.floor(random() * 20_000) : 100 + Math.floor(random() * 6000);
  while (size < target) {
    const len = 1 + Math.floor(random() * 120);
    let line = random() < 0.05 ? '.' : '';
    for (let i = 0; i < len; i++) line += ALPHABET[Math.floor(random() * ALPHABET.length)];
    lines.push(line);
    size += line.length + 2;
  }
  return { n, from, to, data: Buffer.from(`${lines.join('\r\n')}\r\n`), state: 'pending' };
}

function dotStuff(data: Buffer): Buffer {
  return Buffer.from(data.toString('latin1').replace(/^\./gm, '..'), 'latin1');
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok));
  const port = (s.address() as { port: number }).port;
  await new Promise((ok) => s.close(ok));
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class ServerProcess {
  readonly child: ChildProcess;
  #stderr = '';
  #exited: Promise<number | null>;

  constructor(config: string) {
    this.child = spawn(process.execPath, [join(ROOT, 'bin/mailframe.js'), 'start', '-c', config], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child.stderr?.setEncoding('utf8');
    this.child.stderr?.on('data', (s: string) => {
      this.#stderr = (this.#stderr + s).slice(-4000);
    });
    this.#exited = new Promise((ok) => this.child.once('exit', (code) => ok(code)));
  }

  get stderr(): string {
    return this.#stderr;
  }

  get exited(): Promise<number | null> {
    return this.#exited;
  }

  async waitReady(port: number, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let dead = false;
    void this.#exited.then(() => {
      dead = true;
    });
    while (Date.now() < deadline) {
      if (dead) throw new Error(`server exited during start-up: ${this.#stderr}`);
      try {
        const c = await connectClient(port);
        await c.close();
        return;
      } catch {
        await sleep(50);
      }
    }
    throw new Error(`server not ready within ${timeoutMs} ms: ${this.#stderr}`);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.#exited;
  }
}

/** Parse a queue file without the queue's own code: magic line, envelope line, message. */
function parseQueueFile(buf: Buffer):
  | {
      envelope: { from: string; recipients: ReadonlyArray<{ address: string }>; size: number };
      message: Buffer;
    }
  | undefined {
  const first = buf.indexOf(10);
  if (first < 0 || buf.subarray(0, first).toString() !== 'MAILFRAME-QUEUE 1') return undefined;
  const second = buf.indexOf(10, first + 1);
  if (second < 0) return undefined;
  try {
    const envelope = JSON.parse(buf.subarray(first + 1, second).toString('utf8'));
    return { envelope, message: buf.subarray(second + 1) };
  } catch {
    return undefined;
  }
}

/** The journal's live messages by queue id: message records in segment order, minus released ones. */
async function journalMessages(
  dir: string,
): Promise<Map<string, { envelope: QueueEnvelope; message: Buffer }>> {
  const live = new Map<string, { envelope: QueueEnvelope; message: Buffer }>();
  const segments = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.jnl')).sort();
  for (const name of segments) {
    const buf = await readFile(join(dir, name));
    for (const e of scanRecords(buf).entries) {
      if (e.type === 'release') live.delete(e.id);
      else if (!live.has(e.envelope.id))
        live.set(e.envelope.id, { envelope: e.envelope, message: buf.subarray(e.bodyStart, e.bodyEnd) });
    }
  }
  return live;
}

/** A Received field (with folded continuation lines) and nothing else. */
const RECEIVED_ONLY = /^Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*$/;

export async function runCrashScenario(opts: CrashOptions): Promise<CrashReport> {
  const began = Date.now();
  const log = opts.log ?? (() => {});
  const random = rng(opts.seed ?? 20260302);
  const dir = await mkdtemp(join(tmpdir(), 'mf-crash-'));
  const port = await freePort();
  const config = join(dir, 'mailframe.json');
  const maildir = opts.maildir ?? true;
  await writeFile(
    config,
    JSON.stringify({
      hostname: 'crash.test',
      dataDir: './data',
      listeners: [{ name: 'smtp', host: '127.0.0.1', port }],
      log: { level: 'warn', pretty: false },
      timeouts: { shutdownGrace: 1000, command: 30000, data: 30000 },
      limits: { maxConnectionsPerIp: 200 },
      plugins: [
        { plugin: 'enhanced-status-codes' },
        { plugin: 'pipelining' },
        { plugin: 'rcpt-local', config: { domains: ['example.com'] } },
        // With Maildir delivery every message is delivered as soon as it is queued, while the kills go on.
        // Without, each message gets one attempt (no route, deferred) and stays queued.
        ...(maildir
          ? [
              {
                plugin: 'deliver-maildir',
                config: {
                  root: './mail',
                  domains: ['example.com'],
                  lineEndings: 'crlf',
                  fsync: opts.fsync ?? true,
                },
              },
            ]
          : []),
        { plugin: 'queue-fs', config: { fsync: opts.fsync ?? true, retry: '6h...' } },
      ],
    }),
  );
  const all: Sent[] = [];
  const problems: string[] = [];
  const startTimes: number[] = [];
  let kills = 0;
  const phases = [...opts.kills.map((k) => k as KillMode | undefined), undefined];
  let server: ServerProcess | undefined;

  const start = async () => {
    const t = Date.now();
    server = new ServerProcess(config);
    await server.waitReady(port);
    startTimes.push(Date.now() - t);
  };

  try {
    for (const [p, mode] of phases.entries()) {
      await start();
      const proc = server as ServerProcess;
      // Spread what is left over the phases left, so the last one makes up for kills that came early.
      const quota = Math.ceil((opts.messages - all.length) / (phases.length - p));
      let made = 0;
      let ackedHere = 0;
      let killed = false;
      // Leave room for more messages to start after the target, so the kill finds one in progress.
      const target = Math.max(1, Math.floor((quota - opts.senders - 1) * (0.4 + random() * 0.5)));
      const kill = () => {
        if (killed) return;
        killed = true;
        kills++;
        void proc.kill('SIGKILL');
      };
      let randomTimer: NodeJS.Timeout | undefined;
      if (mode === 'random') randomTimer = setTimeout(kill, 100 + Math.floor(random() * 600));

      const sender = async () => {
        let c: SmtpClient | undefined;
        while (!killed && made < quota) {
          const n = all.length;
          const m = makeMessage(n, random, (opts.bigEvery ?? 0) > 0 && n % (opts.bigEvery ?? 1) === 0);
          all.push(m);
          made++;
          try {
            if (!c) {
              c = await connectClient(port);
              await c.expect('EHLO crash.client', 250);
            }
            await c.expect(`MAIL FROM:<${m.from}>`, 250);
            for (const to of m.to) await c.expect(`RCPT TO:<${to}>`, 250);
            await c.expect('DATA', 354);
            m.state = 'in-data';
            const wire = dotStuff(m.data);
            const cut = Math.floor(wire.length / 2);
            c.send(wire.subarray(0, cut));
            await sleep(1);
            if (mode === 'during-data' && ackedHere >= target) {
              kill(); // the server has half of this message
              await proc.exited;
              throw new Error('killed during DATA'); // the rest never leaves: this message is aborted
            }
            c.send(Buffer.concat([wire.subarray(cut), Buffer.from('.\r\n')]));
            m.state = 'dot-sent';
            if (mode === 'after-dot' && ackedHere >= target) {
              await sleep(Math.floor(random() * 4));
              kill(); // the server is receiving or storing this message
            }
            const r = await c.read(30_000);
            if (r.code === 250) {
              m.state = 'acked';
              m.queueId = /queued as (\S+)/.exec(r.lines.join(' '))?.[1] ?? '';
              ackedHere++;
              if (mode === 'after-ack' && ackedHere >= target) kill();
            } else {
              m.state = 'rejected';
              problems.push(`message ${n} refused: ${r.raw.trim()}`);
            }
          } catch {
            m.state = m.state === 'dot-sent' ? 'in-flight' : 'aborted';
            await c?.close();
            c = undefined;
            if (!killed) await sleep(20);
          }
        }
        if (c && !c.ended) await c.command('QUIT').catch(() => undefined);
        await c?.close();
      };
      await Promise.all(Array.from({ length: opts.senders }, sender));
      clearTimeout(randomTimer);
      if (mode !== undefined) {
        kill(); // the phase ran out of messages before its moment came
        await proc.exited;
        log(`phase ${p + 1}: SIGKILL (${mode}) after ${ackedHere} acknowledged`);
      } else {
        log(`phase ${p + 1}: ${ackedHere} acknowledged, no kill`);
      }
      if (mode === undefined) await proc.kill('SIGKILL').then(() => kills++);
    }

    // Restart once more: the start-up scan must accept every file; then ask the CLI
    // (with delivery on, once the restart has delivered what the kills left queued).
    await start();
    let listed = await captureCli(['list', '--json'], config);
    for (let i = 0; maildir && i < 300 && Array.isArray(listed) && listed.length > 0; i++) {
      await sleep(100);
      listed = await captureCli(['list', '--json'], config);
    }
    await (server as ServerProcess).kill('SIGTERM');

    const q = join(dir, 'data', 'queue');
    const files = await readdir(join(q, 'messages'));
    // Messages still in the journal (not yet attempted when the server stopped) count as queued too.
    const journaled = await journalMessages(join(q, 'journal'));
    for (const id of files) journaled.delete(id);
    const names = [...files, ...journaled.keys()];
    const tmpLeftovers = (await readdir(join(q, 'tmp'))).length;
    const corruptFiles = (await readdir(join(q, 'corrupt'))).length;
    const byCrashId = new Map<number, string[]>();
    const contents = new Map<
      string,
      { envelope: { from: string; recipients: ReadonlyArray<{ address: string }> }; message: Buffer }
    >();
    let unexpected = 0;
    for (const name of names) {
      const parsed = journaled.get(name) ?? parseQueueFile(await readFile(join(q, 'messages', name)));
      const n = parsed
        ? Number(/^X-Crash-Id: (\d+)\r$/m.exec(parsed.message.toString('latin1'))?.[1])
        : Number.NaN;
      if (!parsed || !Number.isInteger(n)) {
        unexpected++;
        problems.push(`unreadable queue file ${name}`);
        continue;
      }
      contents.set(name, parsed);
      byCrashId.set(n, [...(byCrashId.get(n) ?? []), name]);
    }
    for (const name of await readdir(join(q, 'state'))) {
      if (!names.includes(name)) problems.push(`state file without a message: ${name}`);
      else JSON.parse(await readFile(join(q, 'state', name), 'utf8'));
    }
    const boxes = maildir
      ? await readMaildirs(join(dir, 'data', 'mail'))
      : { copies: new Map<string, Buffer[]>(), tmpLeftovers: 0 };
    let lost = 0;
    let duplicates = 0;
    let damaged = 0;
    let inFlightPresent = 0;
    let delivered = 0;
    let maildirDuplicates = 0;
    let undelivered = 0;
    for (const m of all) {
      const files = byCrashId.get(m.n) ?? [];
      if (files.length > 1) {
        duplicates++;
        problems.push(`message ${m.n} queued ${files.length} times`);
      }
      // Per recipient: its copies in its Maildir.
      let copiesOfAll = 0;
      let missing = 0;
      for (const to of m.to) {
        const copies = boxes.copies.get(`${m.n} ${to}`) ?? [];
        if (copies.length > 0) copiesOfAll++;
        else missing++;
        if (copies.length > 1) {
          maildirDuplicates++;
          problems.push(`message ${m.n} delivered ${copies.length} times to ${to}`);
        }
        if (m.state === 'acked' || m.state === 'in-flight') {
          for (const copy of copies) {
            if (!intactCopy(copy, m, to)) {
              damaged++;
              problems.push(`message ${m.n} is damaged in the Maildir of ${to}`);
            }
          }
        }
      }
      const present = files.length > 0 || copiesOfAll > 0;
      if (m.state === 'acked') {
        delivered += copiesOfAll;
        if (files.length === 0 && missing > 0) {
          lost++;
          undelivered += missing;
          problems.push(`message ${m.n} got 250 (${m.queueId}) but is neither queued nor delivered to all`);
          continue;
        }
        if (files.length > 0 && !files.includes(m.queueId ?? '')) {
          lost++;
          problems.push(`message ${m.n} got 250 (${m.queueId}) but is queued under another id`);
          continue;
        }
        if (files.length === 0) continue;
      } else if (m.state === 'in-flight') {
        if (present) inFlightPresent++;
        if (files.length === 0) continue;
      } else {
        if (present) {
          unexpected++;
          problems.push(`message ${m.n} (${m.state}) is in the queue or a Maildir without a 250`);
        }
        continue;
      }
      const file = contents.get(files[0] as string);
      if (!file) continue;
      const { message, envelope } = file;
      const prefix = message.subarray(0, message.length - m.data.length).toString('latin1');
      const intact =
        message.length > m.data.length &&
        message.subarray(message.length - m.data.length).equals(m.data) &&
        RECEIVED_ONLY.test(prefix) &&
        envelope.from === m.from &&
        JSON.stringify(envelope.recipients.map((r) => r.address)) === JSON.stringify(m.to);
      if (!intact) {
        damaged++;
        problems.push(`message ${m.n} is damaged in the queue`);
      }
    }
    const listedIds = new Set(
      Array.isArray(listed) ? (listed as Array<{ id: string }>).map((x) => x.id) : [],
    );
    const cliAgrees = listedIds.size === names.length && names.every((n) => listedIds.has(n));
    if (!cliAgrees) problems.push('queue list from the CLI differs from the files');
    const count = (s: MessageState) => all.filter((m) => m.state === s).length;
    return {
      attempted: all.length,
      acked: count('acked'),
      inFlight: count('in-flight'),
      inFlightPresent,
      aborted: count('aborted') + count('in-data') + count('pending'),
      rejected: count('rejected'),
      lost,
      duplicates,
      damaged,
      unexpected,
      corruptFiles,
      tmpLeftovers,
      delivered,
      maildirDuplicates,
      maildirTmpLeftovers: boxes.tmpLeftovers,
      undelivered,
      kills,
      startTimes,
      cliAgrees,
      elapsedMs: Date.now() - began,
      problems,
    };
  } finally {
    await server?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Every message in the Maildirs under `root` (`<domain>/<local>/Maildir`, new/
 * and cur/), keyed by crash id and Delivered-To, and the files left in tmp/.
 */
async function readMaildirs(root: string): Promise<{ copies: Map<string, Buffer[]>; tmpLeftovers: number }> {
  const copies = new Map<string, Buffer[]>();
  let tmpLeftovers = 0;
  const list = (d: string) => readdir(d).catch(() => [] as string[]);
  for (const domain of await list(root)) {
    for (const local of await list(join(root, domain))) {
      const box = join(root, domain, local, 'Maildir');
      tmpLeftovers += (await list(join(box, 'tmp'))).length;
      for (const sub of ['new', 'cur']) {
        for (const name of await list(join(box, sub))) {
          const data = await readFile(join(box, sub, name));
          const text = data.toString('latin1');
          const n = /^X-Crash-Id: (\d+)\r$/m.exec(text)?.[1] ?? '?';
          const to = /^Delivered-To: (\S+)\r$/m.exec(text)?.[1] ?? '?';
          const key = `${n} ${to}`;
          copies.set(key, [...(copies.get(key) ?? []), data]);
        }
      }
    }
  }
  return { copies, tmpLeftovers };
}

/** A Maildir copy: Return-Path, Delivered-To, the Received field, then the octets sent. */
function intactCopy(copy: Buffer, m: Sent, to: string): boolean {
  const head = `Return-Path: <${m.from}>\r\nDelivered-To: ${to}\r\n`;
  if (copy.length <= head.length + m.data.length) return false;
  if (copy.subarray(0, head.length).toString('latin1') !== head) return false;
  if (!copy.subarray(copy.length - m.data.length).equals(m.data)) return false;
  return RECEIVED_ONLY.test(copy.subarray(head.length, copy.length - m.data.length).toString('latin1'));
}

async function captureCli(argv: string[], config: string): Promise<unknown> {
  let out = '';
  let err = '';
  const code = await runQueueCli(argv, config, { out: (t) => (out += t), err: (t) => (err += t) });
  if (code !== 0) throw new Error(`mailframe queue ${argv.join(' ')}: exit ${code}: ${err}`);
  return JSON.parse(out);
}
