/**
 * PIPELINING (RFC 2920): the core already reads ahead and answers a pipelined
 * group in order with one write; this plugin advertises it.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';

export const schema = Type.Object({}, { additionalProperties: false });

export default definePlugin({
  name: 'pipelining',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'RFC 2920 PIPELINING: advertised; replies to a pipelined group go out in one write.',
  schema,
  register(api) {
    api.hooks.capabilities.tap((keywords) => {
      keywords.push('PIPELINING');
      return keywords;
    });
  },
});
