/**
 * The JSON file each bench leaves in bench/results/: when it ran, on what
 * machine, and the bench's own report after that.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './servers.ts';

/** Write `report` to bench/results/`prefix`<start time>.json after the run's times and machine; the path written. */
export async function writeResults(prefix: string, started: Date, report: object): Promise<string> {
  const dir = join(ROOT, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${prefix}${started.toISOString().replace(/[:.]/g, '-')}.json`);
  const header = {
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
  };
  await writeFile(file, `${JSON.stringify({ ...header, ...report }, null, 2)}\n`);
  return file;
}
