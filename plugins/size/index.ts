/**
 * SIZE (RFC 1870): advertise the largest message this server accepts and
 * refuse a MAIL whose declared SIZE is larger. Data that runs past the limit
 * anyway is read to its end and refused by the core with 552 5.3.4.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { Replies, reply } from '../../core/reply.ts';

export const schema = Type.Object(
  {
    advertise: Type.Optional(
      Type.Integer({
        minimum: 1,
        description:
          'Size to advertise in EHLO and check SIZE= against, instead of `limits.maxMessageSize`. Must not exceed it.',
      }),
    ),
  },
  { additionalProperties: false },
);

/** RFC 1870 section 5: size-value is 1*20DIGIT. */
const SIZE_VALUE = /^[0-9]{1,20}$/;
/** RFC 1870 section 4: " SIZE=" and 20 digits lengthen MAIL by 26 octets. */
const SIZE_PARAM_OCTETS = 26;

const badSize = reply(501, '5.5.4', 'SIZE needs a number of octets');

export default definePlugin({
  name: 'size',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'RFC 1870 SIZE: advertises the maximum message size and refuses larger declared sizes.',
  schema,
  register(api, config) {
    const limit = api.server.limits.maxMessageSize;
    const max = config.advertise ?? limit;
    if (max > limit) {
      throw new Error(`"advertise" (${max}) is larger than limits.maxMessageSize (${limit})`);
    }
    api.hooks.capabilities.tap((keywords) => {
      keywords.push(`SIZE ${max}`);
      return keywords;
    });
    api.registerParam({
      name: 'SIZE',
      command: 'MAIL',
      lineLength: SIZE_PARAM_OCTETS,
      handler(value, { tx }) {
        if (value === true || !SIZE_VALUE.test(value)) return badSize;
        // Twenty digits can exceed 2^53; such a value is over any limit anyway.
        const declared = Number(value);
        if (declared > max) return Replies.messageTooBig;
        tx.declaredSize = declared;
        return undefined;
      },
    });
  },
});
