/**
 * `npm run bench:abuse`: what the anti-abuse checks cost on port 25. One run
 * measures W1 (2 KB, 1 rcpt, 10 connections) against mailframe with
 * queue-discard, each configuration a fresh server with its own warm-up
 * (which also fills the DNS cache), and prints the ratios to the first:
 *
 * - baseline: the inbound bench's `mailframe-discard`;
 * - abuse: + every check in `ABUSE_CHECKS` (dnsbl with two zones, fcrdns,
 *   helo-checks, greylist, rate-limit), DNS from a loopback test server whose
 *   answers (negative ones included) live an hour, so the cache stays warm;
 *   greylist and rate-limit on a `policy-store` database seeded with the load
 *   generator's triplet as passed (all triplets known);
 * - abuse-churn: the same with one message per connection (connect, EHLO,
 *   MAIL, RCPT, DATA, QUIT), where the connection checks run for every
 *   message; compared with baseline-churn;
 * - with `--each`: each check alone.
 *
 * The checks pass for the load generator (127.0.0.1 on no list, its PTR
 * loadgen.bench.example confirmed, its EHLO name resolving), so the bench
 * measures the accepting path. A check from another branch joins with one
 * line in `ABUSE_CHECKS` (and its DNS or state in `ZONE`).
 *
 *   npm run bench:abuse -- [--quick] [--time-limit 45] [--each]
 */
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Type from 'typebox';
import { definePlugin } from '../core/plugin.ts';
import { startTestServer } from '../core/testkit.ts';
import { startTestDnsServer, type TestDnsZone } from '../core/testkit-dns.ts';
import '../plugins/dnsbl/index.ts';
import '../plugins/fcrdns/index.ts';
import '../plugins/helo-checks/index.ts';
import '../plugins/greylist/index.ts';
import { clientNetwork } from '../plugins/policy/networks.ts';
import { type CheckName, resultsOf } from '../plugins/policy/policy.ts';
import '../plugins/rate-limit/index.ts';
import { SqlitePolicyStore } from '../plugins/policy-store/sqlite-store.ts';
import { briefRun, measure, type RunMetrics } from './measure.ts';
import { writeResults } from './results.ts';
import { type MailframeExtras, mailframeSpec } from './servers.ts';
import { allWorkloads, type Workload } from './workloads.ts';

/** The target: W1 with the checks keeps at least 70 % of its throughput. */
const TARGET = 0.7;
const HOUR = 3600;

/** Two block lists (each lists only the RFC 5782 test address), the client's PTR and A, its EHLO name. */
const ZONE: TestDnsZone = {
  '2.0.0.127.bl1.bench.example': { A: ['127.0.0.2'], ttl: HOUR },
  '2.0.0.127.bl2.bench.example': { A: ['127.0.0.2'], ttl: HOUR },
  '1.0.0.127.in-addr.arpa': { PTR: ['loadgen.bench.example'], ttl: HOUR },
  'loadgen.bench.example': { A: ['127.0.0.1'], ttl: HOUR },
};

/** Limits the load never reaches: the buckets are taken from, never empty. */
const UNREACHED = { limit: 1_000_000, per: '1m' };

/** The checks under test, in load order: one line each. */
const ABUSE_CHECKS: readonly { readonly plugin: string; readonly config?: object }[] = [
  { plugin: 'dnsbl', config: { zones: [{ zone: 'bl1.bench.example' }, { zone: 'bl2.bench.example' }] } },
  { plugin: 'fcrdns' },
  { plugin: 'helo-checks' },
  {
    plugin: 'rate-limit',
    config: {
      rules: [
        { key: 'ip', count: 'connections', ...UNREACHED },
        { key: 'ip', count: 'messages', ...UNREACHED },
        { key: 'senderDomain', count: 'messages', ...UNREACHED },
        { key: 'network', count: 'recipients', ...UNREACHED },
      ],
    },
  },
  { plugin: 'greylist' },
];

/** The policy state greylist and rate-limit share, seeded before the runs (each server opens it in turn). */
const POLICY_STATE = join(tmpdir(), `mailframe-bench-abuse-${process.pid}.sqlite`);
const NEEDS_STATE = new Set(['greylist', 'rate-limit']);

/** `checks`, with the `policy-store` they need first. */
function withStore(checks: readonly { readonly plugin: string; readonly config?: object }[]) {
  return checks.some((c) => NEEDS_STATE.has(c.plugin))
    ? [{ plugin: 'policy-store', config: { path: POLICY_STATE } }, ...checks]
    : checks;
}

/** The load generator's triplet (127.0.0.1, its sender, W1's recipient) greylisted and passed: all triplets known. */
function seedPolicyState(): void {
  const store = new SqlitePolicyStore({ path: POLICY_STATE });
  const triplet = `${clientNetwork('127.0.0.1', 24, 64)}|loadgen@bench.example|user1@example.com`;
  const times = { delay: 5 * 60_000, retryWindow: 2 * 86_400_000, lifetime: 35 * 86_400_000 };
  const now = Date.now();
  store.greylistSeen(triplet, now - times.delay, times);
  if (store.greylistSeen(triplet, now, times).status !== 'passed') throw new Error('seeding greylist failed');
  store.close();
}

/** What each check must have recorded for the load generator's message (the accepting path). */
const EXPECTED: Readonly<Record<string, readonly string[]>> = {
  dnsbl: ['none', 'none'],
  fcrdns: ['pass'],
  helo: ['pass', 'pass', 'pass', 'pass'],
  greylist: ['pass'],
  // At MAIL (ip, senderDomain) and at RCPT (network).
  'rate-limit': ['pass', 'pass'],
};

const USAGE = `Usage: npm run bench:abuse -- [--quick] [--time-limit S] [--each]

  --quick           A tenth of W1 (2,000 messages).
  --time-limit S    Cap each W1 run at S seconds of load (default 45).
  --each            Also W1 with each check alone.
`;

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** One message through an in-process server with the checks: each must record its passing results. */
async function sanityCheck(dnsAddress: string): Promise<string> {
  const seen: Record<string, string[]> = {};
  const t = await startTestServer({
    config: { dns: { servers: [dnsAddress] } },
    plugins: [
      ...withStore(ABUSE_CHECKS).map((c) =>
        c.config ? { plugin: c.plugin, config: c.config as Record<string, unknown> } : c.plugin,
      ),
      definePlugin({
        name: 'bench-probe',
        schema: Type.Object({}),
        register(api) {
          api.hooks.message.tap((tx) => {
            for (const check of Object.keys(EXPECTED))
              seen[check] = resultsOf(tx, check as CheckName).map((r) => r.result);
            return undefined;
          });
        },
      }),
      ['rcpt-local', { domains: ['example.com'] }],
    ],
  });
  try {
    const c = await t.connect();
    await c.expect('EHLO loadgen.bench.example', 250);
    await c.expect('MAIL FROM:<loadgen@bench.example>', 250);
    await c.expect('RCPT TO:<user1@example.com>', 250);
    await c.expect('DATA', 354);
    if ((await c.sendData('Subject: sanity\r\n\r\nhello\r\n')).code !== 250) throw new Error('DATA refused');
    await c.expect('QUIT', 221);
  } finally {
    await t.close();
  }
  for (const [check, want] of Object.entries(EXPECTED)) {
    if (JSON.stringify(seen[check]) !== JSON.stringify(want))
      throw new Error(
        `sanity check: ${check} recorded ${JSON.stringify(seen[check])}, want ${JSON.stringify(want)}`,
      );
  }
  return JSON.stringify(seen);
}

interface Config {
  readonly id: string;
  readonly what: string;
  readonly extras: MailframeExtras;
  readonly churn: boolean;
  /** The row this one is compared with. */
  readonly baseline: string;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      'time-limit': { type: 'string', default: '45' },
      each: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  const quick = values.quick ?? false;
  const timeLimitMs = Math.max(1, Number(values['time-limit']) || 45) * 1000;
  const w1 = allWorkloads(quick).find((w) => w.id === 'W1');
  if (!w1) throw new Error('no W1 workload');
  const started = new Date();
  // Negative answers (the lists' NXDOMAIN, the EHLO name's missing AAAA and MX) cached for the hour too.
  const dns = await startTestDnsServer(ZONE, { soa: { ttl: HOUR, minimum: HOUR } });
  try {
    seedPolicyState();
    log(`sanity check (one message, in process): ${await sanityCheck(dns.address)}`);
    const core = { dns: { servers: [dns.address] } };
    const all = { core, plugins: withStore(ABUSE_CHECKS) };
    const configs: Config[] = [
      {
        id: 'baseline',
        what: 'mailframe-discard as in npm run bench',
        extras: {},
        churn: false,
        baseline: 'baseline',
      },
      {
        id: 'abuse',
        what: `${ABUSE_CHECKS.map((c) => c.plugin).join(' + ')}, DNS on loopback, cache warm`,
        extras: all,
        churn: false,
        baseline: 'baseline',
      },
      {
        id: 'baseline-churn',
        what: 'baseline, one message per connection',
        extras: {},
        churn: true,
        baseline: 'baseline-churn',
      },
      {
        id: 'abuse-churn',
        what: 'abuse, one message per connection',
        extras: all,
        churn: true,
        baseline: 'baseline-churn',
      },
      ...(values.each
        ? ABUSE_CHECKS.map((c) => ({
            id: `${c.plugin}-only`,
            what: `${c.plugin} alone (--each)`,
            extras: { core, plugins: withStore([c]) },
            churn: false,
            baseline: 'baseline',
          }))
        : []),
    ];
    log(
      `mailframe abuse bench: W1 (${w1.load.messages} messages of ${w1.load.size} octets), ` +
        `${configs.length} configurations; the machine may be shared: compare ratios from one run`,
    );
    const results: { config: Config; metrics?: RunMetrics; dnsQueries?: number; error?: string }[] = [];
    for (const config of configs) {
      const workload: Workload = { ...w1, load: { ...w1.load, churn: config.churn } };
      try {
        const q0 = dns.queries.length;
        const metrics = await measure(mailframeSpec('discard', config.extras), workload, {
          timeLimitMs,
          warmup: true,
          generator: 'loadgen',
        });
        // Over warm-up and run together: a handful means the cache held for the whole run.
        const dnsQueries = dns.queries.length - q0;
        log(`W1 ${config.id}: ${briefRun(metrics)}, DNS queries ${dnsQueries}`);
        results.push({ config, metrics, dnsQueries });
      } catch (err) {
        const error = err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err);
        log(`W1 ${config.id}: failed: ${error}`);
        results.push({ config, error });
      }
    }

    const metricsOf = (id: string) => results.find((r) => r.config.id === id)?.metrics;
    const out = [
      '',
      '| W1 configuration | msgs/s | CPU ms/msg | p99 ms | errors | DNS queries | msgs/s vs its baseline | CPU vs its baseline |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ];
    for (const r of results) {
      const m = r.metrics;
      if (!m) {
        out.push(`| ${r.config.id}: ${r.config.what} | failed: ${r.error} | | | | | | |`);
        continue;
      }
      const base = metricsOf(r.config.baseline);
      const ratio = base ? (m.msgsPerSec / base.msgsPerSec).toFixed(2) : '-';
      const cpu = base ? (m.cpuMsPerMsg / base.cpuMsPerMsg).toFixed(2) : '-';
      out.push(
        `| ${r.config.id}: ${r.config.what} | ${m.msgsPerSec.toFixed(0)} | ${m.cpuMsPerMsg.toFixed(3)} | ${m.p99Ms.toFixed(2)} | ${m.errors} | ${r.dnsQueries ?? '-'} | ${ratio} | ${cpu} |`,
      );
    }
    const judge = (id: string, baseId: string) => {
      const m = metricsOf(id);
      const base = metricsOf(baseId);
      if (!m || !base || m.errors > 0) return `${id}: not judged (a run failed or had errors)`;
      const ratio = m.msgsPerSec / base.msgsPerSec;
      return `${id}: ${ratio >= TARGET ? 'MET' : 'NOT MET'} (${(ratio * 100).toFixed(0)} % of ${baseId})`;
    };
    const verdict = `target (W1 with the checks keeps >= ${TARGET * 100} % of msgs/s): ${judge('abuse', 'baseline')}; ${judge('abuse-churn', 'baseline-churn')}`;
    out.push('', verdict);
    process.stdout.write(`${out.join('\n')}\n`);
    const file = await writeResults('abuse-', started, {
      options: { quick, timeLimitMs, each: values.each },
      workload: w1,
      checks: ABUSE_CHECKS,
      results: results.map((r) => ({
        id: r.config.id,
        what: r.config.what,
        metrics: r.metrics,
        dnsQueries: r.dnsQueries,
        error: r.error,
      })),
      target: { minThroughputRatio: TARGET, verdict },
    });
    process.stdout.write(`\nresults: ${file}\n`);
  } finally {
    await dns.close();
    for (const suffix of ['', '-wal']) await rm(`${POLICY_STATE}${suffix}`, { force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:abuse: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
