/**
 * REQUIRETLS (RFC 8689): on a TLS session, advertise it and accept the
 * valueless MAIL parameter, recorded as `tx.attributes.requireTls` so the queue
 * keeps it and delivery relays the message only over verified TLS to servers
 * that offer REQUIRETLS too.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';

declare module '../../core/types.ts' {
  interface EnvelopeAttributes {
    /** The sender asked for REQUIRETLS (RFC 8689): relay only over verified TLS. */
    requireTls?: boolean;
  }
}

export const schema = Type.Object({}, { additionalProperties: false });

/** RFC 8689 section 2: the parameter lengthens MAIL by 11 octets. */
const REQUIRETLS_PARAM_OCTETS = 11;

const takesNoValue = reply(501, '5.5.4', 'REQUIRETLS takes no value');
/**
 * RFC 8689 names no code for REQUIRETLS on a clear-text session; 530 is RFC 3207's
 * "issue STARTTLS first" and X.7.10 is RFC 5248's "encryption needed".
 */
const needsTls = reply(530, '5.7.10', 'REQUIRETLS needs a TLS session');

export default definePlugin({
  name: 'requiretls',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'RFC 8689 REQUIRETLS: offered on TLS sessions, recorded with the message.',
  schema,
  register(api) {
    api.hooks.capabilities.tap((keywords, session) => {
      if (session.tls) keywords.push('REQUIRETLS');
      return keywords;
    });
    api.registerParam({
      name: 'REQUIRETLS',
      command: 'MAIL',
      lineLength: REQUIRETLS_PARAM_OCTETS,
      handler(value, { session, tx }) {
        if (value !== true) return takesNoValue;
        if (!session.tls) return needsTls;
        tx.attributes.requireTls = true;
        return undefined;
      },
    });
  },
});
