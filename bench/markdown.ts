/**
 * Print a results file (of `npm run bench` or `npm run bench:outbound`) as
 * the Markdown tables bench/README.md shows:
 *
 *   npx tsx bench/markdown.ts [bench/results/<time>.json]   (default: the newest)
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { outboundMarkdown, type SideResult } from './outbound-report.ts';
import { type Cell, cellsOf, type Generator, markdownTable, ratioTable } from './report.ts';
import { ROOT } from './servers.ts';
import type { Workload } from './workloads.ts';

/** What bench/outbound.ts writes. */
interface OutboundResultsFile {
  readonly kind: 'outbound';
  readonly startedAt: string;
  readonly node: string;
  readonly cpus: number;
  readonly cpuModel?: string;
  readonly options: {
    readonly messages: number;
    readonly size: number;
    readonly domains: number;
    /** Absent in the first files: one run. */
    readonly runs?: number;
  };
  readonly results: readonly SideResult[];
}

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

/** The most recently written results file (inbound or outbound; bench:auth's have no tables here). */
function newest(): string {
  const dir = join(ROOT, 'bench', 'results');
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json') && !f.startsWith('auth-'))
    .sort((a, b) => statSync(join(dir, a)).mtimeMs - statSync(join(dir, b)).mtimeMs);
  const last = files.at(-1);
  if (!last) throw new Error(`no results in ${dir}: run npm run bench first`);
  return join(dir, last);
}

const file = process.argv[2] ?? newest();
const r = JSON.parse(readFileSync(file, 'utf8')) as ResultsFile | OutboundResultsFile;
if ('kind' in r && r.kind === 'outbound') {
  const o = r.options;
  process.stdout.write(
    `<!-- ${file.slice(file.lastIndexOf('/') + 1)}: ${r.startedAt}, Node ${r.node}, ${r.cpus} CPUs ` +
      `(${r.cpuModel ?? 'unknown'}), ${o.messages} messages of ${o.size} octets to ${o.domains} domains, ` +
      `medians of ${o.runs ?? 1} run(s) -->\n\n` +
      `${outboundMarkdown(r.results)}\n`,
  );
} else printInbound(r as ResultsFile);

function printInbound(r: ResultsFile): void {
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
}
