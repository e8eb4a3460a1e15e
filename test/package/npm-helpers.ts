/**
 * The package as npm ships it, for the acceptance tests: pack the repository
 * once (its `prepack` build included) into a temporary directory, and run npm,
 * node and the type checker there with the repository's Node 24 first on PATH
 * and no loader. Everything lives under one temporary directory outside the
 * repository (npm's cache for the run included), removed by `cleanup()`.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { cp, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'node_modules', '.bin');

/** What `npm pack` needs from the repository: the build inputs and the `files` it ships. */
const PACK_INPUTS = [
  'package.json',
  'tsconfig.json',
  'tsconfig.build.json',
  'README.md',
  'config.schema.json',
  'core',
  'plugins',
  'bin',
  'scripts',
];

/**
 * The environment for child processes: the repository's `node` (24) and `tsc`
 * first on PATH, and none of the `npm_*` variables of the `npm test` around us
 * (they would steer the inner npm: prefix, cache mode, scripts).
 */
/** npm's cache for this run: inside the temporary directory, so nothing is cached outside it. */
let npmCache: string | undefined;

function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_/i.test(k) && k !== 'INIT_CWD' && k !== 'NODE_OPTIONS') env[k] = v;
  }
  env['PATH'] = [BIN, process.env['PATH'] ?? ''].join(delimiter);
  env['NO_COLOR'] = '1';
  if (npmCache !== undefined) env['npm_config_cache'] = npmCache;
  return { ...env, ...extra };
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a command to completion; never throws for a non-zero exit (the caller asserts). */
export function run(
  cmd: string,
  args: readonly string[],
  cwd: string,
  timeout = 120_000,
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd, env: childEnv(), timeout, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr: err && code === 1 && !stderr ? String(err) : stderr });
      },
    );
  });
}

/** Like `run`, but a non-zero exit throws with the whole output. */
export async function must(
  cmd: string,
  args: readonly string[],
  cwd: string,
  timeout?: number,
): Promise<RunResult> {
  const r = await run(cmd, args, cwd, timeout);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}

export interface Packed {
  /** The temporary directory everything lives in. */
  readonly work: string;
  /** Absolute path of the packed tarball. */
  readonly tarball: string;
  cleanup(): Promise<void>;
}

/**
 * `npm pack` a copy of the repository (so the build never touches the working
 * tree's dist/): the copy links the repository's node_modules for the build.
 */
export async function packRepository(): Promise<Packed> {
  const work = await mkdtemp(join(tmpdir(), 'mailframe-pack-'));
  npmCache = join(work, 'npm-cache');
  const cleanup = async () => {
    npmCache = undefined;
    await rm(work, { recursive: true, force: true });
  };
  try {
    const src = join(work, 'src');
    for (const entry of PACK_INPUTS) {
      await cp(join(ROOT, entry), join(src, entry), {
        recursive: true,
        filter: (from) => !from.endsWith('.test.ts'),
      });
    }
    await symlink(join(ROOT, 'node_modules'), join(src, 'node_modules'), 'dir');
    await must('npm', ['pack', '--silent', '--pack-destination', work], src, 180_000);
    const tgz = (await readdir(work)).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error('npm pack wrote no tarball');
    return { work, tarball: join(work, tgz), cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** `npm install` the given specs (tarballs, folders) where `cwd`'s package.json is. */
export function npmInstall(cwd: string, specs: readonly string[]): Promise<RunResult> {
  return must('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...specs], cwd, 300_000);
}

/** Start a long-running process; resolves with it and its first stdout line. */
export function startProcess(
  cmd: string,
  args: readonly string[],
  cwd: string,
): Promise<{ child: ChildProcess; firstLine: string; output: () => string }> {
  const child = spawn(cmd, args, { cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr?.on('data', (b: Buffer) => {
    err += b.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')}: no output within 30 s\n${out}\n${err}`));
    }, 30_000);
    child.stdout?.on('data', (b: Buffer) => {
      const before = out;
      out += b.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0 && before.indexOf('\n') < 0) {
        clearTimeout(timer);
        resolve({ child, firstLine: out.slice(0, nl), output: () => out + err });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} ${args.join(' ')} exited ${code} before writing a line\n${out}\n${err}`));
    });
  });
}

/** Stop a process started with `startProcess` and wait for it. */
export async function stopProcess(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}
