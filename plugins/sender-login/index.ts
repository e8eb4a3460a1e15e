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
 * delivery not authorized). With `fromHeader` the message's From authors are
 * held to the same rule at the end of DATA (`550 5.7.1`): `dkim-sign` picks
 * the signing domain from From, not from MAIL FROM.
 */
import Type from 'typebox';
import { domainKey, parseMailbox } from '../../core/address.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Address } from '../../core/types.ts';
import { authorMailboxes, readFromFields } from '../dmarc/header-from.ts';

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
    fromHeader: Type.Boolean({
      default: true,
      description:
        "Hold the message's `From` header to the same rule: every author address in it must be owned by the login, or the message is refused at the end of DATA with `550 5.7.1`. A message without a `From` address is not refused here.",
    }),
  },
  { additionalProperties: false },
);

export const notOwned = reply(553, '5.7.1', 'Sender address not owned by the authenticated user');

/** The end of DATA's refusal (RFC 5321 4.3.2: 550 is DATA's policy refusal). */
export const fromNotOwned = reply(550, '5.7.1', 'From header address not owned by the authenticated user');

/** How much of a large message's header section is read for its From field. */
const HEADER_CAP = 256 * 1024;

/** A dot-atom local part (RFC 5322 3.2.3): quoting it changes nothing. */
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

/**
 * How an address is compared: its local part without regard to case (and
 * without quotes that change nothing: `"alice"` is `alice`), its domain as
 * A-labels.
 */
function addressKey(address: Address): string {
  let local = address.localPart;
  if (local.length > 2 && local.startsWith('"') && local.endsWith('"')) {
    const inner = local.slice(1, -1).replace(/\\(.)/g, '$1');
    if (DOT_ATOM.test(inner)) local = inner;
  }
  return `${local.toLowerCase()}@${address.asciiDomain}`;
}

/** A header field value read as latin1, as the text it is (UTF-8 in an internationalized message). */
function decoded(value: string): string {
  return /[^\x00-\x7f]/.test(value) ? Buffer.from(value, 'latin1').toString('utf8') : value;
}

/** `text` as an address key, or undefined when it is not a mailbox. */
function mailboxKey(text: string): string | undefined {
  const parsed = parseMailbox(text, { utf8: true });
  return parsed.ok ? addressKey(parsed.address) : undefined;
}

/** What one owners entry allows: an address key, or a domain as `@` and its A-labels. */
function ownerEntry(login: string, entry: string): string {
  const domain = entry.startsWith('@');
  const key = domain ? domainKey(entry.slice(1)) : mailboxKey(entry);
  if (key === undefined) throw new Error(`owners: "${entry}" (for "${login}") is not an address or @domain`);
  return domain ? `@${key}` : key;
}

export default definePlugin({
  name: 'sender-login',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description:
    "Sender ownership: an authenticated client may use as MAIL FROM, and name as the From header's authors, only the addresses its login owns.",
  schema,
  register(api, config) {
    const owned = new Map<string, Set<string>>();
    for (const [login, entries] of Object.entries(config.owners))
      owned.set(login.toLowerCase(), new Set(entries.map((e) => ownerEntry(login, e))));

    const owns = (user: string, address: Address): boolean => {
      const exact = addressKey(address);
      const listed = owned.get(user.toLowerCase());
      if (listed && (listed.has(exact) || listed.has(`@${address.asciiDomain}`))) return true;
      return config.loginIsAddress && mailboxKey(user) === exact;
    };

    api.hooks.mail.tap((tx, from) => {
      const user = tx.session.user;
      if (user === undefined) return undefined;
      if (from.address === null) return config.nullSender ? undefined : notOwned;
      if (owns(user, from.address)) return undefined;
      tx.log.info({ user, sender: from.address.address }, 'sender not owned by the login: refused');
      return notOwned;
    });

    if (config.fromHeader)
      api.hooks.message.tap(async (tx, message) => {
        const user = tx.session.user;
        if (user === undefined) return undefined;
        for (const value of await readFromFields(tx, message, HEADER_CAP)) {
          for (const spec of authorMailboxes(decoded(value))) {
            const parsed = parseMailbox(spec, { utf8: true });
            if (parsed.ok && owns(user, parsed.address)) continue;
            tx.log.info({ user, author: spec }, 'From address not owned by the login: refused');
            return fromNotOwned;
          }
        }
        return undefined;
      });
  },
});
