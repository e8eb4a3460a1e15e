/**
 * `npm run fuzz -- [--minutes N | --seconds N] [--seed S] [--connections C]
 * [--sessions N] [--replay I] [--rss-growth MiB]`: the bounded network
 * fuzzer (see fuzz.ts and docs/operations.md). Exits 1 on a fault, after
 * printing the seed and a reproducer for each suspect session.
 */
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { formatResult, runFuzz } from './fuzz.ts';

const USAGE = `Usage: npm run fuzz -- [options]
  --minutes N       run for N minutes (default: 1)
  --seconds N       run for N seconds instead
  --seed S          seed (default: random, printed)
  --connections C   sessions in flight at once (default: 8)
  --sessions N      stop after N sessions
  --replay I        play only session I of the seed's run (a reproducer)
  --rss-growth MiB  allowed server memory growth after warm-up (default: 256)
`;

function num(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) {
    process.stderr.write(
      `fuzz: --${name} wants a non-negative number, got ${JSON.stringify(value)}\n${USAGE}`,
    );
    process.exit(2);
  }
  return n;
}

const { values } = parseArgs({
  options: {
    minutes: { type: 'string' },
    seconds: { type: 'string' },
    seed: { type: 'string' },
    connections: { type: 'string' },
    sessions: { type: 'string' },
    replay: { type: 'string' },
    'rss-growth': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const seconds = num('seconds', values.seconds) ?? (num('minutes', values.minutes) ?? 1) * 60;
const seed = num('seed', values.seed) ?? randomInt(2 ** 31);
const replay = num('replay', values.replay);
const rssGrowth = num('rss-growth', values['rss-growth']);
const sessions = num('sessions', values.sessions);

const interrupted = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort());

const result = await runFuzz({
  signal: interrupted.signal,
  seed,
  durationMs: seconds * 1000,
  connections: replay === undefined ? (num('connections', values.connections) ?? 8) : 1,
  ...(replay === undefined ? {} : { firstSession: replay, maxSessions: 1 }),
  ...(sessions === undefined || replay !== undefined ? {} : { maxSessions: sessions }),
  ...(rssGrowth === undefined ? {} : { rssGrowthMiB: rssGrowth }),
  log: (line) => process.stdout.write(`${line}\n`),
});
process.stdout.write(`${formatResult(result)}\n`);
process.exitCode = result.fault === undefined ? 0 : 1;
