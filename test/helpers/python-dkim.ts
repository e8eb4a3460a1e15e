/**
 * Debian's python3-dkim, the independent DKIM implementation of the interop
 * tests, installed by the global setup (test/system-packages.ts). A test that
 * needs it fails with the reason when it cannot be had; it never skips.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ensureSystemPackages } from '../system-packages.ts';

const run = promisify(execFile);

/** Debian's own interpreter: the one python3-dkim installs into (a python3 earlier on PATH may not see it). */
const PYTHON = '/usr/bin/python3';
const INTEROP_SCRIPT = fileURLToPath(new URL('./dkim-interop.py', import.meta.url));

async function haveDkim(): Promise<boolean> {
  try {
    await run(PYTHON, ['-c', 'import dkim']);
    return true;
  } catch {
    return false;
  }
}

/** Make sure `import dkim` works in `PYTHON` (the global setup installs python3-dkim); throws why not. */
export async function ensurePythonDkim(): Promise<void> {
  if (await haveDkim()) return;
  ensureSystemPackages(['python3-dkim']);
  if (!(await haveDkim())) throw new Error(`python3-dkim installed but ${PYTHON} cannot import dkim`);
}

/** Run the interop script with `message` on stdin. */
export function interop(
  args: readonly string[],
  message: Buffer | string,
): Promise<{ stdout: string; code: number }> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      PYTHON,
      [INTEROP_SCRIPT, ...args],
      { maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') reject(err);
        else resolve({ stdout: `${stdout}${stderr}`, code: err ? Number(err.code) : 0 });
      },
    );
    child.stdin?.end(message);
  });
}
