/**
 * Print a results file as the Markdown tables bench/README.md shows:
 *
 *   npx tsx bench/markdown.ts [bench/results/<time>.json]   (default: the newest)
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Cell, markdownTable, ratioTable } from './report.ts';
import { ROOT } from './servers.ts';
import type { Workload } from './workloads.ts';

interface ResultsFile {
  readonly startedAt: string;
  readonly node: string;
  readonly cpus: number;
  readonly cpuModel?: string;
  readonly options: { readonly runs: number; readonly generator: string };
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
process.stdout.write(
  `<!-- ${file.slice(file.lastIndexOf('/') + 1)}: ${r.startedAt}, Node ${r.node}, ${r.cpus} CPUs ` +
    `(${r.cpuModel ?? 'unknown'}), medians of ${r.options.runs} run(s), generator ${r.options.generator} -->\n\n`,
);
process.stdout.write(
  `${markdownTable(r.workloads, r.results)}\n\n\`\`\`\n${ratioTable(r.workloads, r.results)}\n\`\`\`\n`,
);
