/**
 * Summarise V8 CPU profiles (`node --cpu-prof`, e.g. from `npm run bench:auth
 * -- --profile DIR`): where the sampled time went, by area (a plugin, a core
 * file, a package, Node's internals, GC) and by function, self time and
 * inclusive time (an area counts once per sample however deep it recurs).
 * Idle time is left out of the percentages.
 *
 *   node bench/cpuprofile.ts [--top 30] [--per N] FILE.cpuprofile|DIR ...
 *
 * `--per N` also prints microseconds per unit of work (N: messages handled
 * while the profile ran) next to each line.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Where a frame's code lives: `plugins/<name>`, `core/<file>`, a package, `node:` internals, or V8's own. */
export function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return `pkg ${pkg[1]}`;
  const own = /\/(plugins\/[^/]+|core\/[^/]+|bench\/[^/]+|bin\/[^/]+)/.exec(url);
  if (own) return own[1] as string;
  if (url.startsWith('node:')) return `node ${url.slice(5).split('/')[0]}`;
  return url;
}

function frameName(frame: CallFrame): string {
  const file = frame.url.replace(/^.*\/(?=(?:plugins|core|bench|node_modules)\/)/, '');
  return `${frame.functionName || '(anonymous)'} ${file}:${frame.lineNumber + 1}`;
}

function files(paths: readonly string[]): string[] {
  return paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p, { recursive: true })
          .map(String)
          .filter((f) => f.endsWith('.cpuprofile'))
          .map((f) => join(p, f))
      : [p],
  );
}

function summarise(file: string, top: number, per: number | undefined): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const selfArea = new Map<string, number>();
  const inclArea = new Map<string, number>();
  const selfFn = new Map<string, number>();
  let total = 0;
  let idle = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const node = byId.get(id);
    if (!node) return;
    if (node.callFrame.functionName === '(idle)') {
      idle += dt;
      return;
    }
    total += dt;
    const area = areaOf(node.callFrame);
    selfArea.set(area, (selfArea.get(area) ?? 0) + dt);
    const fn = frameName(node.callFrame);
    selfFn.set(fn, (selfFn.get(fn) ?? 0) + dt);
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const a = areaOf((byId.get(n) as ProfileNode).callFrame);
      if (!seen.has(a)) {
        seen.add(a);
        inclArea.set(a, (inclArea.get(a) ?? 0) + dt);
      }
    }
  });
  const line = (us: number) =>
    `${((us / total) * 100).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(7)} ms` +
    (per === undefined ? '' : `  ${(us / per).toFixed(2).padStart(7)} us/unit`);
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
  process.stdout.write(
    `\n${file}\nbusy ${(total / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms` +
      `${per === undefined ? '' : `, ${(total / per).toFixed(1)} us busy per unit`}\n`,
  );
  process.stdout.write('\nself time by area\n');
  for (const [k, v] of sorted(selfArea)) process.stdout.write(`${line(v)}  ${k}\n`);
  process.stdout.write('\ninclusive time by area\n');
  for (const [k, v] of sorted(inclArea)) process.stdout.write(`${line(v)}  ${k}\n`);
  process.stdout.write('\nself time by function\n');
  for (const [k, v] of sorted(selfFn)) process.stdout.write(`${line(v)}  ${k}\n`);
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '30' }, per: { type: 'string' } },
});
const top = Number(values.top) || 30;
const per = values.per === undefined ? undefined : Number(values.per);
if (positionals.length === 0) {
  process.stderr.write('Usage: node bench/cpuprofile.ts [--top 30] [--per N] FILE.cpuprofile|DIR ...\n');
  process.exit(2);
}
for (const f of files(positionals)) summarise(f, top, per);
