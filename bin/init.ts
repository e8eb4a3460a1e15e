/**
 * `mailframe init [DIR] [--mx|--submission|--relay]`: write a new mail server
 * project the user owns (package.json depending on mailframe, a commented
 * mailframe.json for the role, a plugin skeleton with its test, a README).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { hashPassword } from '../plugins/auth-users-file/scrypt-hash.ts';
import { projectFiles, type Role } from './init-templates.ts';

export interface InitOutput {
  out(text: string): void;
  err(text: string): void;
}

const INIT_USAGE = `Usage: mailframe init [DIR] [--mx | --submission | --relay] [--force]

Writes a new mail server project into DIR (default: the current directory):
  --mx          a public MX for your domains, storing mail in Maildirs (default)
  --submission  a submission server: users authenticate and send through a smarthost
  --relay       a relay for your own hosts and applications, through a smarthost
  --force       write into a directory that is not empty (existing files are replaced)
`;

interface PackageJson {
  readonly version: string;
  readonly dependencies?: Record<string, string>;
  readonly devDependencies?: Record<string, string>;
}

/** `1.4.3` -> `^1.4.3`; ranges are kept. */
const caret = (v: string | undefined, fallback: string) =>
  v === undefined ? fallback : /^\d/.test(v) ? `^${v}` : v;

/** An npm package name from a directory name. */
function packageName(dir: string): string {
  const name = basename(dir)
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[._-]+/, '');
  return name || 'mail-server';
}

export async function runInit(argv: readonly string[], packageRoot: string, io: InitOutput): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    io.err(`mailframe init: ${err instanceof Error ? err.message : String(err)}\n\n${INIT_USAGE}`);
    return 2;
  }
  if (parsed.help) {
    io.out(INIT_USAGE);
    return 0;
  }
  const { dir, role, force } = parsed;
  if (existsSync(dir) && readdirSync(dir).some((f) => f !== '.git') && !force) {
    io.err(`mailframe init: ${dir} is not empty (use --force to write into it anyway)\n`);
    return 1;
  }
  const own = JSON.parse(await readFile(join(packageRoot, 'package.json'), 'utf8')) as PackageJson;
  let password: string | undefined;
  let usersFile: string | undefined;
  if (role === 'submission') {
    password = randomBytes(12).toString('base64url');
    usersFile = `${JSON.stringify({ users: { alice: await hashPassword(password) } }, null, 2)}\n`;
  }
  const files = projectFiles({
    name: packageName(dir),
    role,
    versions: {
      mailframe: `^${own.version}`,
      typebox: caret(own.dependencies?.['typebox'], '^1.4.3'),
      typescript: caret(own.devDependencies?.['typescript'], '^7.0.2'),
      typesNode: caret(own.devDependencies?.['@types/node'], '^24.0.0'),
    },
    ...(usersFile === undefined ? {} : { usersFile }),
  });
  for (const [rel, content] of files) {
    const path = join(dir, rel);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, content, rel === 'users.json' ? { mode: 0o600 } : {});
  }
  const shown = relative(process.cwd(), dir) || '.';
  io.out(`Wrote a ${role} project in ${shown}:\n${[...files.keys()].map((f) => `  ${f}\n`).join('')}`);
  if (password !== undefined) io.out(`\nUser "alice" has the password ${password} (shown only now).\n`);
  io.out(`\nNext:\n${shown === '.' ? '' : `  cd ${shown}\n`}  npm install\n  npm start\n  npm test\n`);
  return 0;
}

function parse(argv: readonly string[]): { dir: string; role: Role; force: boolean; help: boolean } {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      mx: { type: 'boolean' },
      submission: { type: 'boolean' },
      relay: { type: 'boolean' },
      force: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const roles = (['mx', 'submission', 'relay'] as const).filter((r) => values[r] === true);
  if (roles.length > 1) throw new Error(`choose one role, not ${roles.map((r) => `--${r}`).join(' and ')}`);
  if (positionals.length > 1) throw new Error(`one directory, not ${positionals.length}`);
  return {
    dir: resolve(positionals[0] ?? '.'),
    role: roles[0] ?? 'mx',
    force: values.force === true,
    help: values.help === true,
  };
}
