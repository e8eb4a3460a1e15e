/**
 * XCLIENT (the Postfix extension): a trusted front end (a proxy, a filter, a
 * load balancer speaking SMTP) tells the server who the real client is. Only
 * clients connecting from `trustedNetworks` may use it; the session then starts
 * over as if the real client had connected (connect hook and greeting again).
 */
import { isIP } from 'node:net';
import Type from 'typebox';
import { decodeXtext } from '../../core/codec/command.ts';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { addressMatcher, normaliseIp } from '../../core/proxy-protocol.ts';
import { reply } from '../../core/reply.ts';
import type { Session } from '../../core/types.ts';

export const schema = Type.Object(
  {
    trustedNetworks: Type.Array(Type.String(), {
      default: ['127.0.0.1', '::1'],
      description: 'Addresses or CIDRs of front ends allowed to send XCLIENT; others get 550 5.7.0.',
    }),
  },
  { additionalProperties: false },
);

declare module '../../core/types.ts' {
  interface SessionNotes {
    /** What the front end said of the real client (NAME, HELO, PROTO as given). */
    xclient?: { readonly name?: string; readonly helo?: string; readonly proto?: string };
  }
}

const ATTRIBUTES = new Set(['NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'LOGIN']);
const UNAVAILABLE = new Set(['[UNAVAILABLE]', '[TEMPUNAVAIL]']);
const badSyntax = reply(501, '5.5.4', 'Bad XCLIENT attribute syntax');

/** Parse `NAME=value ...` (values xtext-encoded); undefined when malformed. */
export function parseXclient(argument: string): Map<string, string | undefined> | undefined {
  const out = new Map<string, string | undefined>();
  const words = argument.trim().split(/ +/);
  if (words.length === 0 || words[0] === '') return undefined;
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq <= 0) return undefined;
    const key = word.slice(0, eq).toUpperCase();
    if (!ATTRIBUTES.has(key) || out.has(key)) return undefined;
    const value = decodeXtext(word.slice(eq + 1));
    if (value === undefined) return undefined;
    out.set(key, UNAVAILABLE.has(value.toUpperCase()) ? undefined : value);
  }
  return out;
}

export default definePlugin({
  name: 'xclient',
  description: 'XCLIENT from trusted front ends: hooks see the real client address.',
  schema,
  register(api, config) {
    const trusted = addressMatcher(config.trustedNetworks);
    // Trust is decided by the address that actually connected, before any XCLIENT.
    const trustedSessions = new WeakMap<Session, boolean>();
    api.hooks.connect.tap(
      (session) => {
        if (!trustedSessions.has(session)) trustedSessions.set(session, trusted(session.remote.address));
        return undefined;
      },
      { stage: Stage.FIRST },
    );
    api.hooks.capabilities.tap((keywords, session) => {
      if (trustedSessions.get(session)) keywords.push('XCLIENT NAME ADDR PORT PROTO HELO LOGIN');
      return keywords;
    });
    api.registerVerb({
      name: 'XCLIENT',
      requiresHelo: false,
      outsideTransaction: true,
      async handler(ctx) {
        if (!trustedSessions.get(ctx.session)) return reply(550, '5.7.0', 'Insufficient authorization');
        const attrs = parseXclient(ctx.argument);
        if (!attrs) return badSyntax;
        let address = ctx.session.remote.address;
        let port = ctx.session.remote.port;
        const addr = attrs.get('ADDR');
        if (addr !== undefined) {
          const ip = addr.toUpperCase().startsWith('IPV6:') ? addr.slice(5) : addr;
          if (isIP(ip) === 0) return badSyntax;
          address = normaliseIp(ip.toLowerCase());
        }
        const portText = attrs.get('PORT');
        if (portText !== undefined) {
          port = Number(portText);
          if (!/^\d{1,5}$/.test(portText) || port > 65535) return badSyntax;
        }
        const name = attrs.get('NAME');
        const helo = attrs.get('HELO');
        const proto = attrs.get('PROTO');
        const login = attrs.get('LOGIN');
        await ctx.reconnectAs({ address, port });
        ctx.session.notes.xclient = {
          ...(name === undefined ? {} : { name }),
          ...(helo === undefined ? {} : { helo }),
          ...(proto === undefined ? {} : { proto }),
        };
        if (login !== undefined) ctx.session.authenticate(login);
        ctx.session.log.info({ via: 'XCLIENT' }, 'client identity set by a trusted front end');
        return undefined;
      },
    });
  },
});
