/**
 * The users file: `{ "users": { "alice": "scrypt$N$r$p$SALT$HASH" } }`, with
 * an optional `"comment"` string. Anything that is not a hash (a plaintext
 * password, say) is refused when the file is loaded. User names are kept as
 * SASLprep prepares them (stored strings, RFC 4013).
 */
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { prepare } from '../auth/saslprep.ts';
import { dummyHash, type PasswordHash, parseHash } from './scrypt-hash.ts';

export interface UserTable {
  readonly users: ReadonlyMap<string, PasswordHash>;
  /** Checked for unknown users, with the cost of the first user's hash. */
  readonly dummy: PasswordHash;
}

const HELP = 'store an scrypt hash made with `npx mailframe hash-password`';

/** Parse the file's text; throws an Error naming every problem (never a password). */
export function parseUsersFile(text: string, path: string): UserTable {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    // The parser's message quotes the text around the error, which may be a password: leave it out.
    throw new Error(`${path}: not valid JSON`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new Error(`${path}: expected an object with a "users" object`);
  }
  const { users, comment, ...rest } = data as Record<string, unknown>;
  const problems: string[] = [];
  for (const key of Object.keys(rest)) problems.push(`"${key}" is not a known setting`);
  if (comment !== undefined && typeof comment !== 'string') problems.push('"comment" must be a string');
  if (typeof users !== 'object' || users === null || Array.isArray(users)) {
    problems.push('"users" must be an object of user name to password hash');
  }
  const table = new Map<string, PasswordHash>();
  for (const [name, value] of Object.entries((users ?? {}) as Record<string, unknown>)) {
    const hash = typeof value === 'string' ? parseHash(value) : undefined;
    // Names are looked up as the auth plugin prepares what the client sends (RFC 4616 section 2).
    const prepared = prepare(name, 'stored');
    if (name === '') problems.push('a user name is empty');
    else if (prepared === undefined)
      problems.push(`user ${JSON.stringify(name)}: SASLprep (RFC 4013) refuses the name`);
    else if (table.has(prepared))
      problems.push(`user ${JSON.stringify(name)}: the same name as another once prepared (${prepared})`);
    else if (!hash)
      problems.push(`user "${name}": not an scrypt password hash (plaintext is refused); ${HELP}`);
    else table.set(prepared, hash);
  }
  if (problems.length > 0) throw new Error(`${path}: ${problems.join('; ')}`);
  const firstHash = table.values().next().value;
  return { users: table, dummy: dummyHash(firstHash?.params, firstHash?.hash.length) };
}

interface UsersFileEvents {
  reloaded: [count: number];
  reloadFailed: [error: Error];
}

/** The loaded table, replaced on reload; a failed reload keeps the previous one. */
export class UsersFile extends EventEmitter<UsersFileEvents> {
  readonly path: string;
  #table: UserTable;

  private constructor(path: string, table: UserTable) {
    super();
    this.path = path;
    this.#table = table;
  }

  static async open(path: string): Promise<UsersFile> {
    const abs = resolve(path);
    return new UsersFile(abs, parseUsersFile(await readFile(abs, 'utf8'), abs));
  }

  get table(): UserTable {
    return this.#table;
  }

  async reload(): Promise<boolean> {
    try {
      this.#table = parseUsersFile(await readFile(this.path, 'utf8'), this.path);
    } catch (err) {
      this.emit('reloadFailed', err instanceof Error ? err : new Error(String(err)));
      return false;
    }
    this.emit('reloaded', this.#table.users.size);
    return true;
  }
}
