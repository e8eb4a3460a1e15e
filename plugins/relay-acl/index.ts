/**
 * Relay control: who may send to domains this server is not the final
 * destination for. Authenticated sessions (optionally only on named
 * listeners), clients in configured networks, and, for any client, the
 * configured relay domains (backup MX). Every other recipient that reaches
 * this plugin is refused with 550 5.7.1.
 *
 * Local recipients never reach it: it taps `rcpt` at `Stage.RELAY`, after the
 * plugins that accept local domains (`rcpt-local` at `Stage.LATE`, which also
 * refuses unknown local mailboxes), and before the `auth` plugin's blanket
 * "authenticated clients relay" fallback at `Stage.LAST`, which its own rules
 * replace.
 */
import { isIP } from 'node:net';
import Type from 'typebox';
import { domainKey, isRoutingLocalPart, unquotedLocalPart } from '../../core/address.ts';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { addressMatcher } from '../../core/proxy-protocol.ts';
import { Replies } from '../../core/reply.ts';
import type { Address, Session } from '../../core/types.ts';

export const schema = Type.Object(
  {
    authenticated: Type.Boolean({
      default: true,
      description: 'Authenticated sessions (AUTH) may relay.',
    }),
    authenticatedListeners: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        description:
          'Listener names on which authenticated sessions may relay (e.g. `["submission"]`). Absent: every listener.',
      }),
    ),
    networks: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description:
        'Client addresses or CIDRs (IPv4 and IPv6, e.g. `192.0.2.0/24`, `2001:db8::/32`) that may relay without AUTH. An IPv4 client on a dual-stack listener (`::ffff:192.0.2.7`) matches its IPv4 entries.',
    }),
    relayDomains: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description:
        'Domains any client may send to (backup MX, a gateway in front of an internal server); exact names, case-insensitive, U-labels or A-labels. A local part that routes further (`%`, `!`, quoted `@`) is still refused.',
    }),
  },
  { additionalProperties: false },
);

/** `10.0.0.0/8`, `2001:db8::/32` or a single address; throws naming the entry otherwise. */
function checkNetwork(entry: string): string {
  const slash = entry.indexOf('/');
  const addr = slash < 0 ? entry : entry.slice(0, slash);
  const version = isIP(addr);
  if (version === 0) throw new Error(`networks: "${entry}" is not an IP address or CIDR`);
  if (slash >= 0) {
    const bits = entry.slice(slash + 1);
    const max = version === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(bits) || Number(bits) > max)
      throw new Error(`networks: "${entry}" has a prefix length outside 0-${max}`);
  }
  return entry;
}

function relayDomain(domain: string): string {
  const key = domainKey(domain);
  if (key === undefined) throw new Error(`relayDomains: "${domain}" is not a domain name`);
  return key;
}

export default definePlugin({
  name: 'relay-acl',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description:
    'Relay control: non-local recipients only for authenticated clients, listed networks, or relay domains.',
  schema,
  register(api, config) {
    const inNetworks = addressMatcher(config.networks.map(checkNetwork));
    const relayDomains = new Set(config.relayDomains.map(relayDomain));
    const authListeners = config.authenticatedListeners && new Set(config.authenticatedListeners);

    const trusted = (session: Session): boolean =>
      (config.authenticated &&
        session.user !== undefined &&
        (authListeners === undefined || authListeners.has(session.listener.name))) ||
      (config.networks.length > 0 && inNetworks(session.remote.address));

    const relaysFor = (address: Address): boolean =>
      relayDomains.has(address.asciiDomain) && !isRoutingLocalPart(unquotedLocalPart(address.localPart));

    api.hooks.rcpt.tap(
      (tx, to) => {
        const { address } = to;
        // `<Postmaster>` is this server's own: not a relay question.
        if (address.domain === '') return undefined;
        if (relaysFor(address) || trusted(tx.session)) return Replies.recipientOk;
        return Replies.relayDenied;
      },
      // After local acceptance (Stage.LATE); before `auth`'s fallback (Stage.LAST), so these rules decide.
      { stage: Stage.RELAY },
    );
  },
});
