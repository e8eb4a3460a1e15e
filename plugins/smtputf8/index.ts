/**
 * SMTPUTF8 (RFC 6531): advertise it and accept the valueless MAIL parameter,
 * which lets the transaction's addresses carry UTF-8 (the core's path parser
 * reads `tx.utf8`). Without it, a non-ASCII address gets 553 5.6.7 from the core.
 * The Received header then says `with UTF8SMTP` (RFC 6531 section 3.7.3).
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';

export const schema = Type.Object({}, { additionalProperties: false });

/** RFC 6531 section 3.4: the parameter lengthens MAIL by up to 10 octets. */
const SMTPUTF8_PARAM_OCTETS = 10;

const takesNoValue = reply(501, '5.5.4', 'SMTPUTF8 takes no value');

export default definePlugin({
  name: 'smtputf8',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'RFC 6531 SMTPUTF8: UTF-8 in envelope addresses for transactions that ask for it.',
  schema,
  // RFC 6531 section 3.1: a server offering SMTPUTF8 MUST also offer 8BITMIME.
  dependencies: ['8bitmime'],
  register(api) {
    api.hooks.capabilities.tap((keywords) => {
      keywords.push('SMTPUTF8');
      return keywords;
    });
    api.registerParam({
      name: 'SMTPUTF8',
      command: 'MAIL',
      lineLength: SMTPUTF8_PARAM_OCTETS,
      handler(value, { tx }) {
        if (value !== true) return takesNoValue;
        tx.utf8 = true;
        tx.attributes.smtputf8 = true;
        return undefined;
      },
    });
  },
});
