/**
 * Instructions per message of the server itself, counted by valgrind's
 * cachegrind: the one measure of the server's CPU here that does not move with
 * the host's load. `bin/mailframe.ts start` runs under valgrind (V8 on one
 * thread, fixed seeds and GC schedule) with queue-discard, with or without the
 * sender-auth checks (spf, dkim-verify, dmarc, auth-results; DNS from a test
 * server on loopback); one client sends W1's message (2 KB, DKIM-signed with
 * RSA-2048) on one connection, one transaction at a time. Two runs, N1 and N2
 * messages: per message = the difference of their counts over N2 - N1, so
 * start-up and shutdown cancel out.
 *
 *   npm run bench:instructions -- [--checks] [--messages 1000,3000] [--out DIR]
 *
 * `--out DIR` keeps both runs' cachegrind files for `cg_diff` and
 * `cg_annotate` (by function). Needs valgrind (`sudo bash
 * bench/install-peers.sh`). A run of 3,000 messages takes a few minutes.
 */
import { spawn } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startTestDnsServer } from '../core/testkit-dns.ts';
import { generateDkimKeyPair } from '../plugins/dkim-sign/keys.ts';
import { dkimSignatureFor } from './dkim-signature.ts';
import { buildMessage } from './message.ts';
import { findProgram, freePort, nodeBinary, ROOT, writeBenchConfig } from './servers.ts';

const { values } = parseArgs({
  options: {
    checks: { type: 'boolean', default: false },
    messages: { type: 'string', default: '1000,3000' },
    out: { type: 'string' },
  },
});
const counts = (values.messages ?? '').split(',').map(Number);
const [n1, n2] = counts as [number, number];
if (counts.length !== 2 || !(n1 >= 0) || !(n2 > n1)) {
  console.error('--messages N1,N2 with 0 <= N1 < N2');
  process.exit(2);
}
const valgrind = findProgram('valgrind');
if (valgrind === undefined) {
  console.error('valgrind is not installed: sudo bash bench/install-peers.sh');
  process.exit(2);
}

const pair = await generateDkimKeyPair('rsa');
const dns = await startTestDnsServer({
  'bench.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'], ttl: 3600 },
  'bench._domainkey.bench.example': { TXT: [pair.record], ttl: 3600 },
  '_dmarc.bench.example': { TXT: ['v=DMARC1; p=reject'], ttl: 3600 },
});
// W1's message, signed, with its end-of-data line.
const text = buildMessage(2048).buffer?.subarray(0, -3).toString('latin1') ?? '';
const field = await dkimSignatureFor(text, createPrivateKey(pair.privateKeyPem), 'bench.example', 'bench');
const message = Buffer.from(`${field}\r\n${text}.\r\n`, 'latin1');

/** A line-at-a-time SMTP client: `send` writes and waits for the final line of the reply. */
function client(socket: Socket) {
  let buffered = '';
  const waiting: Array<(line: string) => void> = [];
  socket.on('data', (d: Buffer) => {
    buffered += d.toString('latin1');
    for (let i = buffered.indexOf('\r\n'); i >= 0; i = buffered.indexOf('\r\n')) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 2);
      if (line[3] === ' ') waiting.shift()?.(line);
    }
  });
  return async (data: string | Buffer | undefined, code: string): Promise<void> => {
    const reply = new Promise<string>((resolve) => waiting.push(resolve));
    if (data !== undefined) socket.write(data);
    const line = await reply;
    if (!line.startsWith(code)) throw new Error(`expected ${code}, got: ${line}`);
  };
}

async function connectWhenUp(port: number, exited: Promise<unknown>): Promise<Socket> {
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  for (;;) {
    if (gone) throw new Error('the server exited before it listened');
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => resolve(s));
        s.once('error', reject);
      });
    } catch {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Instructions executed by a server that handled `n` messages. */
async function count(n: number): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-instructions-'));
  try {
    const port = await freePort();
    const checks = ['spf', 'dkim-verify', 'dmarc', 'auth-results'].map((plugin) => ({ plugin }));
    const file = await writeBenchConfig(
      dir,
      port,
      [...(values.checks ? checks : []), { plugin: 'queue-discard' }],
      {
        dns: { servers: [dns.address] },
      },
    );
    const out = values.out === undefined ? '/dev/null' : join(values.out, `cachegrind-${n}.out`);
    const child = spawn(
      valgrind as string,
      [
        '--tool=cachegrind',
        '--cache-sim=no',
        `--cachegrind-out-file=${out}`,
        nodeBinary(),
        '--single-threaded',
        '--predictable-gc-schedule',
        '--random-seed=1',
        '--hash-seed=1',
        join(ROOT, 'bin', 'mailframe.ts'),
        'start',
        '-c',
        file,
      ],
      { stdio: ['ignore', 'inherit', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const socket = await connectWhenUp(port, exited);
    const send = client(socket);
    await send(undefined, '220');
    await send('EHLO client.bench\r\n', '250');
    for (let i = 0; i < n; i++) {
      await send('MAIL FROM:<loadgen@bench.example>\r\n', '250');
      await send('RCPT TO:<user@example.com>\r\n', '250');
      await send('DATA\r\n', '354');
      await send(message, '250');
    }
    await send('QUIT\r\n', '221');
    child.kill('SIGTERM');
    await exited;
    const refs = /I\s+refs:\s+([\d,]+)/.exec(stderr)?.[1];
    if (refs === undefined) throw new Error(`no instruction count from valgrind:\n${stderr.slice(-2000)}`);
    return Number(refs.replaceAll(',', ''));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const label = values.checks ? 'with spf, dkim-verify, dmarc, auth-results' : 'baseline (no checks)';
console.error(`server under cachegrind, queue-discard, ${label}: ${n1} then ${n2} messages`);
const first = await count(n1);
const second = await count(n2);
await dns.close();
const per = (second - first) / (n2 - n1);
console.log(
  `${label}: ${first.toLocaleString('en')} instructions for ${n1} messages, ${second.toLocaleString('en')} for ${n2}: ${Math.round(per).toLocaleString('en')} per message`,
);
