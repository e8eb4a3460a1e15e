/**
 * Answers the `auth` hook for password mechanisms (PLAIN, LOGIN) from a JSON
 * file of scrypt hashes, reloaded when it changes. Unknown users cost the
 * same scrypt work as wrong passwords, and hashes compare in constant time.
 */
import Type from 'typebox';
import { definePlugin, type ServerFacts } from '../../core/plugin.ts';
import { watchFiles } from '../tls/watch-files.ts';
import { verifyPassword } from './scrypt-hash.ts';
import { UsersFile } from './users-file.ts';

export { UsersFile } from './users-file.ts';

export const schema = Type.Object(
  {
    path: Type.String({
      minLength: 1,
      description:
        'The users file (`{ "users": { "alice": "scrypt$..." } }`), relative to the working directory. Make hashes with `npx mailframe hash-password`.',
    }),
    watch: Type.Boolean({ default: true, description: 'Reload the file when it changes.' }),
    watchDelay: Type.Integer({
      minimum: 0,
      default: 200,
      description: 'Milliseconds to wait after the last change before reloading.',
    }),
  },
  { additionalProperties: false },
);

const PASSWORD_MECHANISMS = new Set(['PLAIN', 'LOGIN']);
const files = new WeakMap<ServerFacts, UsersFile>();

/** The users file a server loaded (tests and tools: e.g. wait for its `reloaded` event). */
export function usersFileOf(server: ServerFacts): UsersFile | undefined {
  return files.get(server);
}

export default definePlugin({
  name: 'auth-users-file',
  description: 'Checks AUTH passwords against scrypt hashes in a JSON users file.',
  schema,
  async register(api, config) {
    const file = await UsersFile.open(config.path);
    files.set(api.server, file);
    api.log.info({ path: file.path, users: file.table.users.size }, 'users file loaded');
    file.on('reloaded', (users) => api.log.info({ path: file.path, users }, 'users file reloaded'));
    file.on('reloadFailed', (err) =>
      api.log.error({ err: err.message }, 'users file reload failed; keeping the previous users'),
    );

    api.hooks.auth.tap(async (_session, request) => {
      if (!PASSWORD_MECHANISMS.has(request.mechanism)) return undefined;
      const { users, dummy } = file.table;
      const stored = users.get(request.username);
      // Always run scrypt, so an unknown user takes as long as a wrong password.
      const match = await verifyPassword(request.secret, stored ?? dummy);
      if (!stored || !match) return { ok: false };
      // No proxy authorisation: a PLAIN authzid must name the user itself (RFC 4616 section 2).
      if (request.authzid !== undefined && request.authzid !== request.username) return { ok: false };
      return { ok: true, user: request.username };
    });

    if (config.watch) {
      const watcher = watchFiles(
        [file.path],
        config.watchDelay,
        () => void file.reload(),
        (err, dir) => api.log.error({ err: err.message, dir }, 'cannot watch the users file directory'),
      );
      api.onClose(() => watcher.close());
    }
    api.onClose(() => {
      file.removeAllListeners();
      files.delete(api.server);
    });
  },
});
