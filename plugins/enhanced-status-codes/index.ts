/** ENHANCEDSTATUSCODES (RFC 2034): advertise it and put RFC 3463 codes on every reply after EHLO. */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';

export const schema = Type.Object({}, { additionalProperties: false });

export default definePlugin({
  name: 'enhanced-status-codes',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'RFC 2034 ENHANCEDSTATUSCODES: enhanced status codes on replies after EHLO.',
  schema,
  register(api) {
    api.hooks.capabilities.tap((keywords, session) => {
      session.enhancedStatusCodes = true;
      keywords.push('ENHANCEDSTATUSCODES');
      return keywords;
    });
  },
});
