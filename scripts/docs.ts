/**
 * Generates what is derived from the schemas, so docs cannot drift from code:
 *
 * - `config.schema.json`: the editor schema for `mailframe.json` (core settings,
 *   bundled plugin names, each bundled plugin's settings);
 * - `docs/configuration.md`: the core settings as tables, and a full example;
 * - `docs/plugins/README.md`: the index of bundled plugins;
 * - the table between `<!-- config:start -->` and `<!-- config:end -->` in each
 *   `docs/plugins/<name>.md` (a missing page is created as a stub);
 * - the admin API reference between `<!-- admin-api:start -->` and
 *   `<!-- admin-api:end -->` in `docs/operations.md` (from the admin-http routes);
 * - the list of metrics between `<!-- metrics:start -->` and `<!-- metrics:end -->`
 *   in `docs/operations.md`, from `plugins/metrics/catalogue.ts`.
 *
 *   npx tsx scripts/docs.ts           write the files
 *   npx tsx scripts/docs.ts --check   only compare; exit 1 listing what would change
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreConfigSchema } from '../core/config-schema.ts';
import { ROUTES } from '../plugins/admin-http/routes/index.ts';
import { metricsTable } from '../plugins/metrics/catalogue.ts';
import { ADMIN_API_END, ADMIN_API_START, adminApiBlock } from './docs/admin-routes.ts';
import { bundledPlugins } from './docs/bundled-plugins.ts';
import { editorSchema } from './docs/editor-schema.ts';
import type { JsonSchema } from './docs/json-schema.ts';
import {
  CONFIG_END,
  CONFIG_START,
  configurationPage,
  fillMarkers,
  pluginConfigBlock,
  pluginIndex,
  pluginStub,
} from './docs/pages.ts';
import { settingRows, undocumented } from './docs/schema-table.ts';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface GenerateOptions {
  /** Only compare with what is on disk; write nothing. */
  readonly check: boolean;
  /** Where `config.schema.json` and `docs/` live (default: the repository root). */
  readonly outDir?: string;
  /** Where the bundled plugins are (default: `<repository>/plugins`). */
  readonly pluginsDir?: string;
}

export interface GenerateResult {
  /** Files (relative to `outDir`) whose content differs from the generated one: written, or would be with `check`. */
  readonly changed: string[];
  /** Plugin pages (relative to `outDir`) missing (with `check`) or without exactly one pair of config markers. */
  readonly missing: string[];
  /** Settings of the core or a bundled plugin that have no description. */
  readonly warnings: string[];
}

async function readIfExists(path: string): Promise<string | undefined> {
  return existsSync(path) ? readFile(path, 'utf8') : undefined;
}

export async function generateDocs(options: GenerateOptions): Promise<GenerateResult> {
  const outDir = options.outDir ?? REPO_ROOT;
  const plugins = await bundledPlugins(options.pluginsDir ?? join(REPO_ROOT, 'plugins'));
  const core = CoreConfigSchema as unknown as JsonSchema;
  const result: GenerateResult = { changed: [], missing: [], warnings: [] };

  const files = new Map<string, string>([
    ['config.schema.json', `${JSON.stringify(editorSchema(core, plugins), null, 2)}\n`],
    ['docs/configuration.md', configurationPage(core, plugins)],
    ['docs/plugins/README.md', pluginIndex(plugins)],
  ]);
  for (const plugin of plugins) {
    const rel = `docs/plugins/${plugin.name}.md`;
    const current = await readIfExists(join(outDir, rel));
    if (current === undefined) {
      if (options.check) result.missing.push(rel);
      else files.set(rel, pluginStub(plugin));
      continue;
    }
    const filled = fillMarkers(current, pluginConfigBlock(plugin));
    if (filled === undefined) {
      result.missing.push(rel);
    } else {
      files.set(rel, filled);
    }
    for (const key of undocumented(settingRows(plugin.schema))) {
      result.warnings.push(`plugin ${plugin.name}: setting "${key}" has no description`);
    }
  }
  // A hand-written page with one generated block; where the page is absent (a bare outDir) there is nothing to fill.
  const operations = 'docs/operations.md';
  const opsPage = await readIfExists(join(outDir, operations));
  if (opsPage !== undefined) {
    const withApi = fillMarkers(opsPage, adminApiBlock(ROUTES), ADMIN_API_START, ADMIN_API_END);
    const filled = withApi && fillMarkers(withApi, metricsTable(), METRICS_START, METRICS_END);
    if (filled === undefined) result.missing.push(operations);
    else files.set(operations, filled);
  }
  for (const key of undocumented(settingRows(core))) {
    result.warnings.push(`core: setting "${key}" has no description`);
  }

  for (const [rel, content] of files) {
    const path = join(outDir, rel);
    if ((await readIfExists(path)) === content) continue;
    result.changed.push(rel);
    if (!options.check) {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, content);
    }
  }
  return result;
}

const METRICS_START = '<!-- metrics:start -->';
const METRICS_END = '<!-- metrics:end -->';

function whyMissing(rel: string): string {
  if (rel === 'docs/operations.md')
    return `${rel}: needs one "${ADMIN_API_START}" line followed by one "${ADMIN_API_END}" line, and one "${METRICS_START}" line followed by one "${METRICS_END}" line`;
  return existsSync(join(REPO_ROOT, rel))
    ? `${rel}: needs one "${CONFIG_START}" line followed by one "${CONFIG_END}" line`
    : `${rel}: page missing (\`npm run docs\` creates a stub to fill in)`;
}

async function main(argv: readonly string[]): Promise<number> {
  const check = argv.includes('--check');
  const { changed, missing, warnings } = await generateDocs({ check });
  for (const w of warnings) process.stderr.write(`docs: warning: ${w}\n`);
  if (check) {
    if (changed.length === 0 && missing.length === 0) {
      process.stdout.write('docs: generated files are up to date\n');
      return 0;
    }
    process.stderr.write('docs: generated files are out of date (run `npm run docs`):\n');
    for (const f of changed) process.stderr.write(`  would change: ${f}\n`);
    for (const f of missing) process.stderr.write(`  ${whyMissing(f)}\n`);
    return 1;
  }
  for (const f of changed) process.stdout.write(`docs: wrote ${f}\n`);
  if (changed.length === 0) process.stdout.write('docs: nothing to do\n');
  for (const f of missing) process.stderr.write(`docs: ${whyMissing(f)}\n`);
  return missing.length === 0 ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`docs: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
