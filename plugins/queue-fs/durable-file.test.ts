import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { commitTmpFile, TmpFilePool } from './durable-file.ts';

let dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  dirs = [];
});

async function layout(): Promise<{ tmp: string; out: string }> {
  const root = await mkdtemp(join(tmpdir(), 'mf-df-'));
  dirs.push(root);
  const tmp = join(root, 'tmp');
  const out = join(root, 'out');
  await mkdir(tmp);
  await mkdir(out);
  return { tmp, out };
}

describe('durable file writes', () => {
  for (const sync of [true, false]) {
    it(`commits files taken from the pool with their content (sync ${sync}) and leaves tmp/ empty on close`, async () => {
      const { tmp, out } = await layout();
      const pool = new TmpFilePool(tmp, { sync, size: 3 });
      const parts = [Buffer.from('MAILFRAME-QUEUE 1\n{}\n'), Buffer.from('Subject: x\r\n\r\nbody\r\n')];
      for (let i = 0; i < 5; i++) {
        await commitTmpFile(await pool.take(), join(out, `m${i}`), parts, sync);
      }
      for (let i = 0; i < 5; i++) {
        expect(await readFile(join(out, `m${i}`), 'utf8')).toBe(Buffer.concat(parts).toString('utf8'));
      }
      // Files opened ahead wait in tmp/ until the pool closes.
      expect((await readdir(tmp)).length).toBeGreaterThan(0);
      await pool.close();
      expect(await readdir(tmp)).toEqual([]);
    });
  }

  it('removes the temporary file when the rename fails', async () => {
    const { tmp, out } = await layout();
    const pool = new TmpFilePool(tmp, { sync: true, size: 0 });
    await expect(
      commitTmpFile(await pool.take(), join(out, 'missing-dir', 'm'), [Buffer.from('x')], true),
    ).rejects.toThrow(/ENOENT/);
    expect(await readdir(tmp)).toEqual([]);
    await pool.close();
  });

  it('writes every buffer of a large vector', async () => {
    const { tmp, out } = await layout();
    const pool = new TmpFilePool(tmp, { sync: false, size: 0 });
    const parts = Array.from({ length: 64 }, (_, i) => Buffer.alloc(16 * 1024, 97 + (i % 26)));
    await commitTmpFile(await pool.take(), join(out, 'big'), parts, false);
    expect((await readFile(join(out, 'big'))).equals(Buffer.concat(parts))).toBe(true);
    await pool.close();
  });
});
