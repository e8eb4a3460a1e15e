/**
 * Print a results file as the Markdown tables bench/README.md shows:
 *
 *   npx tsx bench/markdown.ts [bench/results/<time>.json]   (default: the newest)
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Cell, cellsOf, type Generator, markdownTable, ratioTable } from './report.ts';
import { ROOT } from './servers.ts';
import type { Workload } from './workloads.ts';

interface ResultsFile {
  readonly startedAt: string;
  readonly node: string;
  readonly cpus: number;
  readonly cpuModel?: string;
  /** `generator` in files written before one invocation could run both. */
  readonly options: {
    readonly runs: number;
    readonly generators?: Generator[];
    readonly generator?: Generator;
  };
  readonly workloads: readonly Workload[];
  readonly results: readonly Cell[];
}

function newest(): string {
  const dir = join(ROOT, 'bench', 'results');
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort();
  const last = files.at(-1);
  if (!last) throw new Error(`no results in ${dir}: run npm run bench first`);
  return join(dir, last);
}

const file = process.argv[2] ?? newest();
const r = JSON.parse(readFileSync(file, 'utf8')) as ResultsFile;
const generators = r.options.generators ?? [r.options.generator ?? 'loadgen'];
// An older file ran one generator and did not name it per cell.
const results = r.options.generators
  ? r.results
  : r.results.map((c) => ({ ...c, generator: generators[0] as Generator }));
process.stdout.write(
  `<!-- ${file.slice(file.lastIndexOf('/') + 1)}: ${r.startedAt}, Node ${r.node}, ${r.cpus} CPUs ` +
    `(${r.cpuModel ?? 'unknown'}), medians of ${r.options.runs} run(s), load from ${generators.join(' then ')} -->\n`,
);
for (const g of generators) {
  const cells = cellsOf(results, g);
  const workloads = r.workloads.filter((w) => cells.some((c) => c.workload === w.id));
  process.stdout.write(
    `\n${generators.length > 1 ? `Load from ${g}:\n\n` : ''}${markdownTable(workloads, cells)}\n\n` +
      `\`\`\`\n${ratioTable(workloads, cells, g)}\n\`\`\`\n`,
  );
}
