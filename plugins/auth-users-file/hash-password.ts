#!/usr/bin/env -S npx tsx
/**
 * Print an scrypt hash for the users file.
 *
 *   npx tsx plugins/auth-users-file/hash-password.ts            # reads the password from stdin
 *   printf %s 'secret' | npx tsx plugins/auth-users-file/hash-password.ts
 *   npx tsx plugins/auth-users-file/hash-password.ts 'secret'   # visible in shell history and ps
 */
import { createInterface } from 'node:readline/promises';
import { hashPassword } from './scrypt-hash.ts';

async function readPassword(): Promise<string> {
  if (process.stdin.isTTY) {
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    try {
      return await rl.question('Password: ');
    } finally {
      rl.close();
    }
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  // One trailing line break is the terminator `echo` adds, not part of the password.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

const args = process.argv.slice(2);
if (args[0] === '--help' || args[0] === '-h' || args.length > 1) {
  process.stderr.write('Usage: hash-password.ts [password]   (without an argument, reads it from stdin)\n');
  process.exit(args.length > 1 ? 2 : 0);
}
const password = args[0] ?? (await readPassword());
if (password === '') {
  process.stderr.write('hash-password: empty password\n');
  process.exit(2);
}
try {
  process.stdout.write(`${await hashPassword(password)}\n`);
} catch (err) {
  process.stderr.write(`hash-password: ${err instanceof Error ? err.message : err}\n`);
  process.exit(2);
}
