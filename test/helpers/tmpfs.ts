/**
 * A real, small file system for disk-full tests: a tmpfs mounted on a
 * directory (needs root, as on the development machine and CI). A test that
 * cannot mount fails with a message saying so; it never skips silently.
 */
import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Tmpfs {
  readonly dir: string;
  /** Write a file of filler until the file system is full (ENOSPC). */
  fill(name?: string): Promise<void>;
  /** Unmount (idempotent). */
  unmount(): Promise<void>;
}

/** Mount a tmpfs of `size` octets on the existing directory `dir`. */
export async function mountTmpfs(dir: string, size: number): Promise<Tmpfs> {
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  } catch (err) {
    throw new Error(
      `disk-full tests need a real full file system: mounting a tmpfs on ${dir} failed (run the tests as root): ${(err as Error).message}`,
    );
  }
  let mounted = true;
  return {
    dir,
    async fill(name = 'filler') {
      const fh = await open(join(dir, name), 'w');
      const block = Buffer.alloc(64 * 1024, 0x78);
      try {
        for (;;) await fh.write(block);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        await fh.close();
      }
      // The last partial page: write single octets until nothing fits.
      const tail = await open(join(dir, `${name}.tail`), 'w').catch(() => undefined);
      if (tail) {
        try {
          for (;;) await tail.write(Buffer.alloc(512, 0x78));
        } catch {
          // full
        } finally {
          await tail.close();
        }
      }
    },
    async unmount() {
      if (!mounted) return;
      mounted = false;
      await run('umount', [dir]);
    },
  };
}
