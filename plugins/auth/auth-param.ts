/**
 * The MAIL `AUTH=` parameter (RFC 4954 section 5): the xtext-encoded mailbox
 * that originally submitted the message, or `<>`. Only an authenticated
 * client is trusted to assert it; for any other the server acts as if
 * `AUTH=<>` was given, as the RFC requires.
 */
import { parseMailbox } from '../../core/address.ts';
import { decodeXtext } from '../../core/codec/command.ts';
import type { ParamDefinition } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';

const badAuthParam = reply(501, '5.5.4', 'Invalid AUTH parameter');

export const authParam: ParamDefinition = {
  name: 'AUTH',
  command: 'MAIL',
  handler(value, ctx) {
    if (value === true) return badAuthParam;
    const decoded = decodeXtext(value);
    if (decoded === undefined) return badAuthParam;
    if (decoded !== '<>' && !parseMailbox(decoded, { utf8: true }).ok) return badAuthParam;
    ctx.tx.attributes.auth = ctx.session.user === undefined ? '<>' : decoded;
    return undefined;
  },
};
