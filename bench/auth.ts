/**
 * `npm run bench:auth`: what sender authentication costs. One run measures W1
 * (2 KB, 1 rcpt, 10 connections) against mailframe in several configurations,
 * each a fresh server with its own warm-up (which also fills the DNS cache),
 * and prints each one's ratio to the baseline of the same queue:
 *
 * - baseline: the inbound bench's `mailframe-discard` (queue-discard: the
 *   protocol path alone, no queue);
 * - checks: + spf + dkim-verify + dmarc + auth-results, DNS from a loopback
 *   test server holding the sender domain's SPF, DKIM and DMARC records;
 * - baseline-fs, checks-fs: the same pair on the inbound bench's
 *   `mailframe-fs` (queue-fs with fsync + deliver-discard), the server a
 *   receiving MTA that runs these checks really is;
 * - checks-pool, checks-fs-pool (with `--only`): the checks with dkim-verify's
 *   `threadPool` (signatures checked on libuv's thread pool);
 * - checks-w1, checks-fs-w1, checks-w2, checks-fs-w2 (with `--only`): the
 *   checks with dkim-verify's `workers: 1` or `2` (messages verified in worker
 *   threads);
 * - sign (with `--only`): baseline + dkim-sign (RSA-2048) with
 *   `signUnauthenticated` for the sender domain, so the load generator needs
 *   no AUTH; sign-ed25519: the same with an Ed25519 key;
 * - with `--each`: spf alone and dkim-verify alone (on queue-discard);
 * - spf-dkim, dmarc-ar (with `--only`): spf + dkim-verify, and dmarc +
 *   auth-results alone, to split the checks' cost per plugin.
 *
 * Every configuration gets the same message: W1's, DKIM-signed beforehand
 * (RSA-2048) so dkim-verify has a real signature to check. Then DKIM
 * signatures per second with dkim-sign's own signer, RSA-2048 and Ed25519,
 * on a 2 KB message, single-threaded, in this process; and DKIM verifications
 * per second of the W1 message with dkim-verify's verifier (warm caches).
 *
 *   npm run bench:auth -- [--quick] [--time-limit 45] [--sign-seconds 3] [--each]
 *                          [--only baseline,checks] [--rounds 3] [--profile DIR]
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { StubResolver } from '../core/dns/resolver.ts';
import { startTestServer } from '../core/testkit.ts';
import { startTestDnsServer, type TestDnsServer } from '../core/testkit-dns.ts';
import { KeyCache, verifyMessage } from '../plugins/dkim/verify.ts';
import { generateDkimKeyPair } from '../plugins/dkim-sign/keys.ts';
import { dkimSignatureFor } from './dkim-signature.ts';
import { briefRun, measure, type RunMetrics } from './measure.ts';
import { buildMessage, type MessageData } from './message.ts';
import { writeResults } from './results.ts';
import { type MailframeExtras, mailframeSpec } from './servers.ts';
import { allWorkloads, type Workload } from './workloads.ts';

/** The load generator's sender domain (MAIL FROM and From: loadgen@bench.example). */
const SENDER = 'bench.example';
const SELECTOR = 'bench';
/** The target: the checks cost at most 35 % of W1 throughput with a warm cache. */
const TARGET = 0.65;

/** What `--only` defaults to: the checks against both baselines. */
const DEFAULT_CONFIGS = ['baseline', 'checks', 'baseline-fs', 'checks-fs'];

const USAGE = `Usage: npm run bench:auth -- [--quick] [--time-limit S] [--sign-seconds S] [--each] [--rounds N]

  --quick           A tenth of W1 (2,000 messages) and 1 s per signing algorithm.
  --time-limit S    Cap each W1 run at S seconds of load (default 45).
  --sign-seconds S  Time per signing algorithm (default 3).
  --each            Also W1 with spf alone and dkim-verify alone (where the checks' cost lies).
  --only IDS        Only these configurations, in this order (comma-separated ids: baseline,
                    checks, baseline-fs, checks-fs, checks-pool, checks-fs-pool (dkim-verify
                    with threadPool), checks-w1, checks-fs-w1, checks-w2, checks-fs-w2
                    (dkim-verify with workers: 1 or 2), sign, sign-ed25519, spf-only, dkim-verify-only, spf-dkim, dmarc-ar; default ${DEFAULT_CONFIGS.join(',')}, plus the two
                    -only ones with --each). Ratios are to baseline (queue-discard) or
                    baseline-fs (queue-fs), whichever has the same queue, when it ran.
  --rounds N        Run the configurations N times in turn (default 1); report each one's median
                    round and the median of its per-round ratios (a shared machine's load varies).
  --profile DIR     Run each server under node --cpu-prof, writing DIR/<id>/*.cpuprofile
                    (warm-up included; summarise with bench/cpuprofile.ts).
`;

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** W1's message with a DKIM-Signature field on top, made by dkim-sign's own signer. */
async function signedMessage(base: MessageData, key: KeyObject): Promise<MessageData> {
  if (!base.buffer) throw new Error('W1 message is not a single buffer');
  const text = base.buffer.subarray(0, base.buffer.length - 3).toString('latin1'); // without `.CRLF`
  const field = await sign(text, key);
  const signed = `${field}\r\n${text}`;
  return { size: signed.length, buffer: Buffer.from(`${signed}.\r\n`, 'latin1'), stream: undefined };
}

/** One DKIM-Signature field for `text` (a whole message), as dkim-sign computes it. */
function sign(text: string, key: KeyObject): Promise<string> {
  return dkimSignatureFor(text, key, SENDER, SELECTOR);
}

/**
 * DKIM verifications per second of `message` (one signature) with dkim-verify's
 * verifier over `seconds`, key record from the resolver's warm cache and the
 * parsed key from the verifier's key cache: the per-message cost of a check.
 */
async function verifyRate(message: Buffer, dns: TestDnsServer, seconds: number): Promise<number> {
  const resolver = new StubResolver({
    servers: [{ host: dns.host, port: dns.port }],
    clock: { now: () => Date.now() },
    timeout: 2000,
    attempts: 2,
    cacheSize: 100,
    minTtl: 0,
    maxTtl: 86400,
    negativeTtl: 60,
    errorTtl: 5,
    trustAd: false,
  });
  const keys = new KeyCache();
  const once = async () => {
    const out = await verifyMessage(message, {
      lookup: (name) => resolver.lookup(name, 'TXT'),
      now: Date.now(),
      minKeyBits: 1024,
      maxSignatures: 10,
      clockSkew: 300,
      keys,
    });
    if (out.signatures[0]?.result !== 'pass') throw new Error(`verifier bench: ${JSON.stringify(out)}`);
  };
  try {
    await once();
    const until = performance.now() + seconds * 1000;
    const t0 = performance.now();
    let n = 0;
    while (performance.now() < until || n < 10) {
      await once();
      n++;
    }
    return n / ((performance.now() - t0) / 1000);
  } finally {
    resolver.close();
  }
}

/** Signatures per second for one key over `seconds`, body hash included. */
async function signRate(text: string, key: KeyObject, seconds: number): Promise<number> {
  const until = performance.now() + seconds * 1000;
  const t0 = performance.now();
  let n = 0;
  while (performance.now() < until || n < 10) {
    await sign(text, key);
    n++;
  }
  return n / ((performance.now() - t0) / 1000);
}

/**
 * One message through an in-process server with the checks and dkim-sign, so
 * the bench measures the passing path: SPF, DKIM and DMARC must all pass and
 * dkim-sign must add a signature. Returns the Authentication-Results field.
 */
async function sanityCheck(
  dns: TestDnsServer,
  message: MessageData,
  signConfig: Record<string, unknown>,
): Promise<string> {
  const t = await startTestServer({
    dns,
    plugins: [
      'spf',
      'dkim-verify',
      'dmarc',
      'auth-results',
      ['dkim-sign', signConfig],
      ['rcpt-local', { domains: ['example.com'] }],
    ],
  });
  try {
    const c = await t.connect();
    await c.expect('EHLO loadgen.bench.example', 250);
    await c.expect(`MAIL FROM:<loadgen@${SENDER}>`, 250);
    await c.expect('RCPT TO:<user1@example.com>', 250);
    await c.expect('DATA', 354);
    const reply = await c.sendData(message.buffer?.subarray(0, -3).toString('latin1') ?? '');
    if (reply.code !== 250) throw new Error(`sanity check: DATA answered ${reply.code}`);
    await c.expect('QUIT', 221);
    const [queued] = await t.waitForMessages(1);
    const text = queued?.text ?? '';
    const field = /^Authentication-Results:.*(?:\r\n\t.*)*/m.exec(text)?.[0] ?? '';
    for (const m of ['spf', 'dkim', 'dmarc']) {
      if (!new RegExp(`\\b${m}=pass\\b`).test(field))
        throw new Error(`sanity check: no ${m}=pass in ${field}`);
    }
    if ((text.match(/^DKIM-Signature:/gm) ?? []).length !== 2)
      throw new Error('sanity check: dkim-sign added no signature');
    return field;
  } finally {
    await t.close();
  }
}

type Queue = 'discard' | 'fs';

interface Config {
  readonly id: string;
  readonly what: string;
  /** queue-discard (`mailframe-discard`) or queue-fs (`mailframe-fs`), as in `npm run bench`. */
  readonly queue: Queue;
  readonly extras: MailframeExtras;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      'time-limit': { type: 'string', default: '45' },
      'sign-seconds': { type: 'string' },
      each: { type: 'boolean', default: false },
      only: { type: 'string' },
      rounds: { type: 'string', default: '1' },
      profile: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  const quick = values.quick ?? false;
  const each = values.each ?? false;
  const rounds = Math.max(1, Math.floor(Number(values.rounds) || 1));
  const timeLimitMs = Math.max(1, Number(values['time-limit']) || 45) * 1000;
  const signSeconds = Math.max(0.2, Number(values['sign-seconds']) || (quick ? 1 : 3));
  const w1 = allWorkloads(quick).find((w) => w.id === 'W1');
  if (!w1) throw new Error('no W1 workload');

  const started = new Date();
  const rsa = await generateDkimKeyPair('rsa');
  const ed = await generateDkimKeyPair('ed25519');
  const rsaKey = createPrivateKey(rsa.privateKeyPem);
  const edKey = createPrivateKey(ed.privateKeyPem);
  const dir = await mkdtemp(join(tmpdir(), 'mailframe-bench-auth-'));
  const dns = await startTestDnsServer({
    [SENDER]: { TXT: ['v=spf1 ip4:127.0.0.1 -all'], ttl: 3600 },
    [`${SELECTOR}._domainkey.${SENDER}`]: { TXT: [rsa.record], ttl: 3600 },
    [`_dmarc.${SENDER}`]: { TXT: ['v=DMARC1; p=reject'], ttl: 3600 },
  });
  try {
    const rsaFile = join(dir, 'rsa.pem');
    await writeFile(rsaFile, rsa.privateKeyPem, { mode: 0o600 });
    const message = await signedMessage(buildMessage(w1.load.size), rsaKey);
    const load = { ...w1.load, message };
    const core = { dns: { servers: [dns.address] } };
    const signConfig = {
      domains: [
        { domain: SENDER, selectors: [{ selector: SELECTOR, keyFile: rsaFile }], signUnauthenticated: true },
      ],
    };
    const edFile = join(dir, 'ed25519.pem');
    await writeFile(edFile, ed.privateKeyPem, { mode: 0o600 });
    const signConfigEd = {
      domains: [
        { domain: SENDER, selectors: [{ selector: 'ed', keyFile: edFile }], signUnauthenticated: true },
      ],
    };
    log(
      `sanity check (one message, in process): ${(await sanityCheck(dns, message, signConfig)).replace(/\r\n\t/g, ' ')}`,
    );
    const checksExtras: MailframeExtras = {
      core,
      plugins: ['spf', 'dkim-verify', 'dmarc', 'auth-results'].map((plugin) => ({ plugin })),
    };
    const all: Config[] = [
      { id: 'baseline', what: 'mailframe-discard as in npm run bench', queue: 'discard', extras: {} },
      {
        id: 'checks',
        what: 'spf + dkim-verify + dmarc + auth-results, DNS on loopback, cache warm',
        queue: 'discard',
        extras: checksExtras,
      },
      { id: 'baseline-fs', what: 'mailframe-fs as in npm run bench (durable)', queue: 'fs', extras: {} },
      { id: 'checks-fs', what: 'the same checks on mailframe-fs', queue: 'fs', extras: checksExtras },
      ...(['discard', 'fs'] as const).map(
        (queue): Config => ({
          id: queue === 'fs' ? 'checks-fs-pool' : 'checks-pool',
          what: `the same checks${queue === 'fs' ? ' on mailframe-fs' : ''}, dkim-verify threadPool: true`,
          queue,
          extras: {
            core,
            plugins: ['spf', 'dkim-verify', 'dmarc', 'auth-results'].map((plugin) =>
              plugin === 'dkim-verify' ? { plugin, config: { threadPool: true } } : { plugin },
            ),
          },
        }),
      ),
      ...[1, 2].flatMap((workers) =>
        (['discard', 'fs'] as const).map(
          (queue): Config => ({
            id: `${queue === 'fs' ? 'checks-fs' : 'checks'}-w${workers}`,
            what: `the same checks${queue === 'fs' ? ' on mailframe-fs' : ''}, dkim-verify workers: ${workers}`,
            queue,
            extras: {
              core,
              plugins: ['spf', 'dkim-verify', 'dmarc', 'auth-results'].map((plugin) =>
                plugin === 'dkim-verify' ? { plugin, config: { workers } } : { plugin },
              ),
            },
          }),
        ),
      ),
      {
        id: 'sign',
        what: `dkim-sign (RSA-2048, signUnauthenticated for ${SENDER}: no AUTH)`,
        queue: 'discard',
        extras: {
          core,
          plugins: [{ plugin: 'dkim-sign', config: signConfig }],
        },
      },
      {
        id: 'sign-ed25519',
        what: 'the same with an Ed25519 key',
        queue: 'discard',
        extras: { core, plugins: [{ plugin: 'dkim-sign', config: signConfigEd }] },
      },
      ...['spf', 'dkim-verify'].map(
        (plugin): Config => ({
          id: `${plugin}-only`,
          what: `${plugin} alone`,
          queue: 'discard',
          extras: { core, plugins: [{ plugin }] },
        }),
      ),
      {
        id: 'spf-dkim',
        what: 'spf + dkim-verify (checks less dmarc and auth-results)',
        queue: 'discard',
        extras: { core, plugins: ['spf', 'dkim-verify'].map((plugin) => ({ plugin })) },
      },
      {
        id: 'dmarc-ar',
        what: 'dmarc + auth-results alone (no SPF or DKIM result: dmarc=fail, p=reject not honoured)',
        queue: 'discard',
        extras: {
          core,
          plugins: [{ plugin: 'dmarc', config: { honorPolicy: false } }, { plugin: 'auth-results' }],
        },
      },
    ];
    const only =
      values.only?.split(',').map((id) => id.trim()) ??
      (each ? [...DEFAULT_CONFIGS, 'spf-only', 'dkim-verify-only'] : DEFAULT_CONFIGS);
    const unknown = only.filter((id) => !all.some((c) => c.id === id));
    if (unknown.length) throw new Error(`--only: unknown configuration ${unknown.join(', ')}`);
    const profile = values.profile === undefined ? undefined : resolve(values.profile);
    const configs = only
      .flatMap((id) => all.filter((c) => c.id === id))
      .map((c) =>
        profile === undefined
          ? c
          : {
              ...c,
              extras: { ...c.extras, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${join(profile, c.id)}`] },
            },
      );
    log(
      `mailframe auth bench: W1 (${w1.load.messages} messages of ${message.size} octets, DKIM-signed), ` +
        `${configs.length} configurations; the machine may be shared: compare ratios from one run`,
    );
    const workload: Workload = { ...w1, load };
    // Per configuration, one entry per round (undefined: that round's run failed).
    const results = configs.map((c) => ({
      id: c.id,
      what: c.what,
      queue: c.queue,
      runs: [] as (RunMetrics | undefined)[],
      dnsQueries: [] as number[],
      errors: [] as string[],
    }));
    for (let round = 1; round <= rounds; round++) {
      for (const [i, c] of configs.entries()) {
        const r = results[i] as (typeof results)[number];
        const tag = rounds > 1 ? `W1 ${c.id} (round ${round}/${rounds})` : `W1 ${c.id}`;
        try {
          const q0 = dns.queries.length;
          const spec = mailframeSpec(c.queue, c.extras);
          const metrics = await measure(spec, workload, {
            timeLimitMs,
            warmup: true,
            generator: 'loadgen',
          });
          // Queries over warm-up and run together: a handful means the cache held for the whole run.
          const dnsQueries = dns.queries.length - q0;
          log(`${tag}: ${briefRun(metrics)}, DNS queries ${dnsQueries}`);
          r.runs.push(metrics);
          r.dnsQueries.push(dnsQueries);
        } catch (err) {
          const error = err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err);
          log(`${tag}: failed: ${error}`);
          r.runs.push(undefined);
          r.errors.push(error);
        }
      }
    }

    const text = buildMessage(2048).buffer?.subarray(0, -3).toString('latin1') ?? '';
    const signing = [
      { key: 'RSA-2048', perSec: await signRate(text, rsaKey, signSeconds) },
      { key: 'Ed25519', perSec: await signRate(text, edKey, signSeconds) },
    ];
    const verifying = {
      key: 'RSA-2048',
      perSec: await verifyRate(message.buffer?.subarray(0, -3) ?? Buffer.alloc(0), dns, signSeconds),
    };

    const byId = (id: string) => results.find((r) => r.id === id);
    const baseOf = (queue: Queue) => byId(queue === 'fs' ? 'baseline-fs' : 'baseline');
    /** The round with the median throughput (a real run, not a mix of several). */
    const median = (r: (typeof results)[number]): RunMetrics | undefined => {
      const ok = r.runs
        .filter((m): m is RunMetrics => m !== undefined)
        .sort((a, b) => a.msgsPerSec - b.msgsPerSec);
      return ok[Math.floor((ok.length - 1) / 2)];
    };
    /** The median over rounds of `r`'s figure over its baseline's in the same round (paired: same load). */
    const ratio = (r: (typeof results)[number], figure: (m: RunMetrics) => number): number | undefined => {
      const base = baseOf(r.queue);
      if (!base) return undefined;
      const ratios = r.runs
        .flatMap((m, i) => {
          const b = base.runs[i];
          return m && b ? [figure(m) / figure(b)] : [];
        })
        .sort((a, b) => a - b);
      if (ratios.length === 0) return undefined;
      const mid = ratios.length / 2;
      return ratios.length % 2
        ? ratios[Math.floor(mid)]
        : ((ratios[mid - 1] as number) + (ratios[mid] as number)) / 2;
    };
    const cleanRuns = (r: (typeof results)[number] | undefined) =>
      r !== undefined && r.errors.length === 0 && r.runs.every((m) => m !== undefined && m.errors === 0);
    const out = [
      '',
      rounds > 1
        ? `${rounds} rounds: each row is the round with the median msgs/s; the ratios are medians of the per-round ratios.`
        : '',
      '| W1 configuration | msgs/s | CPU ms/msg | main thread | p99 ms | errors | DNS queries | msgs/s vs its baseline | CPU vs its baseline | main thread vs its baseline |',
    ];
    out.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const r of results) {
      const m = median(r);
      if (!m) {
        out.push(`| ${r.id}: ${r.what} | failed: ${r.errors[0]} | | | | | | | | |`);
        continue;
      }
      const fixed = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(2));
      const errors = r.runs.reduce((n, x) => n + (x?.errors ?? 0), 0) + r.errors.length;
      out.push(
        `| ${r.id}: ${r.what} | ${m.msgsPerSec.toFixed(0)} | ${m.cpuMsPerMsg.toFixed(3)} | ${m.mainCpuMsPerMsg.toFixed(3)} | ${m.p99Ms.toFixed(2)} | ${errors} | ${Math.max(...r.dnsQueries)} | ${fixed(ratio(r, (x) => x.msgsPerSec))} | ${fixed(ratio(r, (x) => x.cpuMsPerMsg))} | ${fixed(ratio(r, (x) => x.mainCpuMsPerMsg))} |`,
      );
    }
    // One verdict per queue and checks configuration that ran (checks, and its -pool and -wN variants):
    // its throughput over the baseline's on the same queue.
    const verdicts = (['discard', 'fs'] as const).flatMap((queue) => {
      const label = queue === 'fs' ? 'queue-fs (durable)' : 'queue-discard';
      const base = baseOf(queue);
      const prefix = queue === 'fs' ? 'checks-fs' : 'checks';
      const variants = results.filter(
        (r) => r.queue === queue && (r.id === prefix || new RegExp(`^${prefix}-(?:pool|w\\d+)$`).test(r.id)),
      );
      if (!base && variants.length === 0) return [];
      if (variants.length === 0) return [`${label}: not judged (no checks configuration ran)`];
      return variants.map((checks) => {
        const x = ratio(checks, (m) => m.msgsPerSec);
        const name = checks.id === prefix ? label : `${label}, ${checks.id}`;
        if (!cleanRuns(base) || !cleanRuns(checks) || x === undefined)
          return `${name}: not judged (a run failed, had errors or did not run)`;
        return `${name}: ${x >= TARGET ? 'MET' : 'NOT MET'} (${x.toFixed(2)}x)`;
      });
    });
    const verdict = `target (checks keep >= ${TARGET * 100} % of W1 msgs/s): ${verdicts.length ? verdicts.join('; ') : 'not judged (no baseline/checks pair ran)'}`;
    out.push('', verdict, '', '| DKIM signing, 2 KB message, one thread | signatures/s |', '| --- | ---: |');
    for (const s of signing) out.push(`| ${s.key} | ${s.perSec.toFixed(0)} |`);
    out.push(
      '',
      `| DKIM verification (dkim-verify's verifier), W1 message, one thread, warm caches | verifications/s |`,
      '| --- | ---: |',
      `| ${verifying.key} | ${verifying.perSec.toFixed(0)} |`,
    );
    process.stdout.write(`${out.join('\n')}\n`);

    const report = {
      options: { quick, timeLimitMs, signSeconds, rounds },
      workload: { ...w1, messageOctets: message.size },
      results,
      target: { minThroughputRatio: TARGET, verdict },
      signing,
      verifying,
    };
    const file = await writeResults('auth-', started, report);
    process.stdout.write(`\nresults: ${file}\n`);
  } finally {
    await dns.close();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:auth: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
