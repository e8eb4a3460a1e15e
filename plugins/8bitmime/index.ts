/**
 * 8BITMIME (RFC 6152): advertise it and accept `BODY=7BIT` or `BODY=8BITMIME`
 * on MAIL, recorded as `tx.attributes.body`. When the chunking plugin is loaded
 * with `binaryMime`, `BODY=BINARYMIME` (RFC 3030) is advertised and accepted too,
 * so the keyword and the value are offered together or not at all.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { ChunkingService } from '../chunking/service.ts';

export const schema = Type.Object({}, { additionalProperties: false });

const BASE_BODY_TYPES: readonly string[] = ['7BIT', '8BITMIME'];

const badBody = reply(501, '5.5.4', 'BODY must be 7BIT or 8BITMIME');
const badBodyBinary = reply(501, '5.5.4', 'BODY must be 7BIT, 8BITMIME or BINARYMIME');

export default definePlugin({
  name: '8bitmime',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'RFC 6152 8BITMIME: the BODY parameter (and BINARYMIME with the chunking plugin).',
  schema,
  register(api) {
    // Looked up when used, so the order of the two plugins in the config does not matter.
    const binaryMime = (): boolean => {
      const chunking: ChunkingService | undefined = api.service('chunking');
      return chunking?.binaryMime === true;
    };
    api.hooks.capabilities.tap((keywords) => {
      keywords.push('8BITMIME');
      if (binaryMime()) keywords.push('BINARYMIME');
      return keywords;
    });
    api.registerParam({
      name: 'BODY',
      command: 'MAIL',
      // The longest value with its keyword: " BODY=BINARYMIME" (RFC 3030; RFC 6152 adds at most " BODY=8BITMIME").
      lineLength: ' BODY=BINARYMIME'.length,
      handler(value, { tx }) {
        const binary = binaryMime();
        if (value === true) return binary ? badBodyBinary : badBody;
        const body = value.toUpperCase();
        if (BASE_BODY_TYPES.includes(body) || (binary && body === 'BINARYMIME')) {
          tx.attributes.body = body;
          return undefined;
        }
        return binary ? badBodyBinary : badBody;
      },
    });
  },
});
