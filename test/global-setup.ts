/**
 * Test hygiene for the whole run: every test gets a temp folder of its own
 * run (TMPDIR points into it, for the workers and the processes they spawn),
 * and the run fails if a `mailframe-*` file or directory is left in it at the
 * end: every test server and helper cleans up, even when its start fails. The
 * folder is removed either way, so a failed run leaves nothing behind either.
 * First it installs the Debian packages the tests use (system-packages.ts).
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureSystemPackages } from './system-packages.ts';

export default function setup(): () => void {
  // Real peers (python3-dkim, ...) before any test file starts: see system-packages.ts.
  ensureSystemPackages();
  const previous = process.env['TMPDIR'];
  const dir = mkdtempSync(join(tmpdir(), 'mailframe-run-'));
  process.env['TMPDIR'] = dir;
  return () => {
    if (previous === undefined) delete process.env['TMPDIR'];
    else process.env['TMPDIR'] = previous;
    const left = readdirSync(dir).filter((name) => name.startsWith('mailframe-'));
    rmSync(dir, { recursive: true, force: true });
    if (left.length > 0) {
      throw new Error(
        `the test run left ${left.length} temporary entr${left.length === 1 ? 'y' : 'ies'} behind: ${left.join(', ')}`,
      );
    }
  };
}
