/**
 * Sender ownership for authenticated sessions (what Postfix calls
 * `reject_sender_login_mismatch`): a client that logged in may give as MAIL
 * FROM only an address its login owns, so that one user cannot send as
 * another, nor get another domain's DKIM signature from `dkim-sign`, which
 * signs an authenticated session's mail for the configured domains. A login
 * owns the addresses listed for it in `owners` (whole domains as `@domain`)
 * and, with `loginIsAddress`, the address it is. Unauthenticated sessions are
 * not this plugin's business (relay control and the sender checks are).
 * Refused: `553 5.7.1` (RFC 5321 4.2.2: mailbox name not allowed; RFC 3463:
 * delivery not authorized).
 */
import Type from 'typebox';
import { domainKey } from '../../core/address.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Address } from '../../core/types.ts';

export const schema = Type.Object(
  {
    owners: Type.Record(Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 2 })), {
      default: {},
      description:
        'For each login, the sender addresses it owns: `alice@example.org`, or `@example.org` for every address of that domain (subdomains not included). Logins and addresses are compared without regard to case.',
    }),
    loginIsAddress: Type.Boolean({
      default: true,
      description: 'A login that is an address (`alice@example.org`) owns that address.',
    }),
    nullSender: Type.Boolean({
      default: true,
      description: 'An authenticated session may use the null sender `<>` (its own bounces, read receipts).',
    }),
  },
  { additionalProperties: false },
);

export const notOwned = reply(553, '5.7.1', 'Sender address not owned by the authenticated user');

/** What one owners entry allows: an address (`local@domain`, lower case) or a domain (`@domain`, A-labels). */
function ownerEntry(login: string, entry: string): string {
  const at = entry.lastIndexOf('@');
  const domain = at < 0 ? undefined : domainKey(entry.slice(at + 1));
  if (at < 0 || domain === undefined || (at > 0 && entry.slice(0, at).trim() === ''))
    throw new Error(`owners: "${entry}" (for "${login}") is not an address or @domain`);
  return `${entry.slice(0, at).toLowerCase()}@${domain}`;
}

/** The keys an address is looked up by: itself, then its domain. */
function keys(address: Address): [string, string] {
  return [`${address.localPart.toLowerCase()}@${address.asciiDomain}`, `@${address.asciiDomain}`];
}

export default definePlugin({
  name: 'sender-login',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description:
    'Sender ownership: an authenticated client may use as MAIL FROM only the addresses its login owns.',
  schema,
  register(api, config) {
    const owned = new Map<string, Set<string>>();
    for (const [login, entries] of Object.entries(config.owners))
      owned.set(login.toLowerCase(), new Set(entries.map((e) => ownerEntry(login, e))));

    const owns = (user: string, address: Address): boolean => {
      const [exact, domain] = keys(address);
      const listed = owned.get(user.toLowerCase());
      if (listed && (listed.has(exact) || listed.has(domain))) return true;
      if (!config.loginIsAddress) return false;
      const at = user.lastIndexOf('@');
      if (at <= 0) return false;
      return `${user.slice(0, at).toLowerCase()}@${domainKey(user.slice(at + 1)) ?? ''}` === exact;
    };

    api.hooks.mail.tap((tx, from) => {
      const user = tx.session.user;
      if (user === undefined) return undefined;
      if (from.address === null || from.address.domain === '')
        return config.nullSender ? undefined : notOwned;
      if (owns(user, from.address)) return undefined;
      tx.log.info({ user, sender: from.address.address }, 'sender not owned by the login: refused');
      return notOwned;
    });
  },
});
