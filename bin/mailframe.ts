#!/usr/bin/env node
/**
 * mailframe command line: start a server, check a config, print the version.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readConfigFile } from '../core/config.ts';
import { MailframeError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { MailServer } from '../core/server.ts';

/** The package's root: the repository, or node_modules/mailframe when installed (this file is then in dist/bin/). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

const root = packageRoot();
/** Only in the repository: the installed package ships no examples (a project has its own mailframe.json). */
const DEFAULT_CONFIG = join(root, 'examples', 'default', 'mailframe.json');

const USAGE = `Usage: mailframe <command> [options]

Commands:
  start [-c FILE]          Start the server (default config: ./mailframe.json if present,
                           else the embedded default in examples/default/mailframe.json)
  check-config [FILE]      Validate a configuration and its plugins' settings, then exit
  queue <command> [-c FILE] Inspect and manage the queue (list, show, hold, release,
                           retry, delete, stats, migrate; --json for scripts): see docs/queue.md
  init [DIR] [--mx|--submission|--relay]
                           Write a new mail server project (package.json, a commented
                           mailframe.json for the role, a plugin with its test, README)
  schema [-c FILE] [-o FILE]
                           Write mailframe.schema.json: the editor schema with the settings of
                           the plugin packages and files the config names (point $schema at it)
  dkim keygen --domain D --selector S [--type rsa|ed25519] [--out DIR]
                           Write a DKIM private key for dkim-sign and print the TXT record
  hash-password [PASSWORD] Print an scrypt hash for auth-users-file (reads stdin without PASSWORD)
  admin-token [NAME]       Print a new admin-http API token and the tokens-file line that admits it
  --version                Print the version
  --help                   Show this text

Signals: SIGTERM/SIGINT shut down gracefully (421 to idle sessions, open
transactions finish within timeouts.shutdownGrace). SIGHUP reloads the
configuration file: a bad one changes nothing and the log says why; sessions
already open finish under the configuration they began with.

Faults: an error a plugin raises outside its hook calls (floating promise,
timer, listener) is logged and counted, and the server keeps serving; an
uncaught exception no plugin owns shuts down gracefully, then exits with 1.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

function pickConfig(file: string | undefined): string {
  if (file) return resolve(file);
  const local = resolve('mailframe.json');
  if (existsSync(local) || !existsSync(DEFAULT_CONFIG)) return local;
  return DEFAULT_CONFIG;
}

function fail(err: unknown): never {
  if (err instanceof MailframeError) {
    process.stderr.write(`mailframe: ${err.message}\n`);
  } else {
    process.stderr.write(`mailframe: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  }
  process.exit(1);
}

async function checkConfig(file: string): Promise<void> {
  const { raw, baseDir } = await readConfigFile(file);
  const server = await MailServer.create({ config: raw, baseDir });
  await server.close(0);
  process.stdout.write(`${file}: OK\n`);
}

async function start(file: string): Promise<void> {
  const { raw, baseDir } = await readConfigFile(file);
  const logCfg = (raw as { log?: { level?: string; pretty?: boolean } }).log ?? {};
  const log = createLogger({
    level: logCfg.level ?? 'info',
    ...(logCfg.pretty === undefined ? {} : { pretty: logCfg.pretty }),
  });
  log.info({ config: file, version: version() }, 'starting mailframe');
  // SIGHUP's default action ends the process: take it from the start. One that arrives while the
  // plugins start is applied once the server listens (the file may have changed since it was read).
  let server: MailServer | undefined;
  let reloadPending = false;
  let stopping = false;
  const hup = () => {
    if (stopping) return;
    log.info({ signal: 'SIGHUP', config: file }, 'reload requested');
    if (server) void server.reload();
    else reloadPending = true;
  };
  process.on('SIGHUP', hup);
  // The CLI owns the process: plugin faults are caught, logged and counted (docs/operations.md, "Faults").
  const created = await MailServer.create({
    config: raw,
    baseDir,
    logger: log,
    catchFaults: true,
    // SIGHUP and plugins (admin-http's POST /api/reload) read the same file again.
    configSource: () => readConfigFile(file),
  });
  try {
    await created.listen();
  } catch (err) {
    await created.close(0);
    throw err;
  }
  server = created;
  if (reloadPending) void created.reload();
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    created.close().then(
      () => process.exit(0),
      (err) => fail(err),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'init') {
    const { runInit } = await import('./init.ts');
    const io = { out: (s: string) => process.stdout.write(s), err: (s: string) => process.stderr.write(s) };
    process.exitCode = await runInit(argv.slice(1), root, io);
    return;
  }
  if (argv[0] === 'hash-password') {
    // The users-file tool reads its password argument from process.argv itself.
    process.argv.splice(2, 1);
    await import('../plugins/auth-users-file/hash-password.ts');
    return;
  }
  if (argv[0] === 'admin-token') {
    const { runAdminTokenCli } = await import('../plugins/admin-http/admin-token.ts');
    const io = { out: (s: string) => process.stdout.write(s), err: (s: string) => process.stderr.write(s) };
    process.exitCode = runAdminTokenCli(argv.slice(1), io);
    return;
  }
  if (argv[0] === 'schema') {
    const { runSchemaCli } = await import('./schema-cli.ts');
    const io = { out: (s: string) => process.stdout.write(s), err: (s: string) => process.stderr.write(s) };
    process.exitCode = await runSchemaCli(argv.slice(1), root, pickConfig(undefined), io);
    return;
  }
  if (argv[0] === 'dkim') {
    const { runDkimCli } = await import('./dkim-cli.ts');
    const io = { out: (s: string) => process.stdout.write(s), err: (s: string) => process.stderr.write(s) };
    process.exitCode = await runDkimCli(argv.slice(1), io);
    return;
  }
  if (argv[0] === 'queue') {
    const { runQueueCli } = await import('./queue-cli.ts');
    process.exitCode = await runQueueCli(argv.slice(1), pickConfig(undefined));
    return;
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      version: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, arg] = positionals;
  if (values.version) return void process.stdout.write(`${version()}\n`);
  if (values.help || command === 'help') return void process.stdout.write(USAGE);
  switch (command) {
    case 'start':
      return start(pickConfig(values.config ?? arg));
    case 'check-config':
      return checkConfig(pickConfig(arg ?? values.config));
    case undefined:
      process.stderr.write(USAGE);
      process.exit(2);
      break;
    default:
      process.stderr.write(`mailframe: unknown command "${command}"\n\n${USAGE}`);
      process.exit(2);
  }
}

main(process.argv.slice(2)).catch(fail);
