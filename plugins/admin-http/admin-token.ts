/**
 * `mailframe admin-token [NAME]`: print a new admin API token and the line
 * that admits it, to add to the admin-http tokens file. The token itself is
 * shown once and stored nowhere.
 */
import { newToken } from './tokens.ts';

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

const USAGE = 'Usage: mailframe admin-token [NAME]   (NAME: who or what uses the token, default "admin")\n';

export function runAdminTokenCli(argv: readonly string[], io: Io): number {
  if (argv[0] === '--help' || argv[0] === '-h') {
    io.out(USAGE);
    return 0;
  }
  if (argv.length > 1) {
    io.err(USAGE);
    return 2;
  }
  let made: { token: string; line: string };
  try {
    made = newToken(argv[0] ?? 'admin');
  } catch (err) {
    io.err(`admin-token: ${(err as Error).message}\n`);
    return 2;
  }
  io.out(`token: ${made.token}\n`);
  io.out(`line:  ${made.line}\n`);
  io.err(
    'Add the line to the admin-http tokens file; give the token to its user (it is not stored anywhere).\n',
  );
  return 0;
}
