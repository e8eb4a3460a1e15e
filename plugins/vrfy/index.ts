/**
 * VRFY and EXPN (RFC 5321 sections 3.5 and 7.3) with a chosen policy. By
 * default VRFY answers 252 (cannot verify, will try delivery) and EXPN 502,
 * which reveals nothing; `lookup` answers from static tables instead. A
 * trailing `SMTPUTF8` parameter (RFC 6531 section 3.7.4) allows UTF-8
 * addresses in the answer; without it they are withheld with 553 5.6.8.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { Replies, type Reply, reply } from '../../core/reply.ts';
import { Directory, splitSmtputf8 } from './directory.ts';

const Mode = (description: string, dflt: string) =>
  Type.Union([Type.Literal('cannot-verify'), Type.Literal('reject'), Type.Literal('lookup')], {
    default: dflt,
    description,
  });

export const schema = Type.Object(
  {
    mode: Mode(
      'VRFY: `cannot-verify` answers 252 2.5.0, `reject` 502 5.5.1 (RFC 5321 7.3 expects 252 when VRFY is turned off), `lookup` answers from `mailboxes`: 250 2.1.5, 550 5.1.1, or 553 5.1.4 when a local part matches several.',
      'cannot-verify',
    ),
    mailboxes: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description:
        'Addresses VRFY confirms in `lookup` mode (`alice@example.com`), matched case-insensitively.',
    }),
    expn: Mode(
      'EXPN: `reject` answers 502 5.5.1, `cannot-verify` 252 2.5.0, `lookup` lists the members from `lists`.',
      'reject',
    ),
    lists: Type.Record(Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 })), {
      default: {},
      description: 'Mailing lists EXPN expands in `lookup` mode: list address to member addresses.',
    }),
  },
  { additionalProperties: false },
);

const needArgument = (verb: string) => reply(501, '5.5.4', `${verb} needs a mailbox or name`);
const notFound = reply(550, '5.1.1', 'No such mailbox here');
const ambiguous = reply(553, '5.1.4', 'Ambiguous: give the whole address');
const vrfyDisabled = reply(502, '5.5.1', 'VRFY is disabled');
const expnDisabled = reply(502, '5.5.1', 'EXPN is disabled');
const cannotExpand = reply(252, '2.5.0', 'Cannot EXPN, but will accept the message and attempt delivery');
/** RFC 6531 section 3.7.4.2 and X.6.8: the answer needs UTF-8 the client did not allow. */
const needsUtf8 = reply(553, '5.6.8', 'The answer contains UTF-8: repeat the command with SMTPUTF8');

const nonAscii = (s: string): boolean => /[^\x00-\x7f]/.test(s);

export default definePlugin({
  name: 'vrfy',
  description: 'VRFY and EXPN answers: 252 (default), refused, or looked up in static tables.',
  schema,
  register(api, config) {
    const mailboxes = new Directory(config.mailboxes.map((m) => [m, m] as const));
    const lists = new Directory(Object.entries(config.lists));

    api.registerVerb({
      name: 'VRFY',
      requiresHelo: false,
      handler({ argument }): Reply {
        const { query, utf8 } = splitSmtputf8(argument);
        if (query === '') return needArgument('VRFY');
        if (config.mode === 'cannot-verify') return Replies.cannotVerify;
        if (config.mode === 'reject') return vrfyDisabled;
        const found = mailboxes.find(query);
        if (found.kind === 'none') return notFound;
        if (found.kind === 'ambiguous') return ambiguous;
        if (!utf8 && nonAscii(found.value)) return needsUtf8;
        return reply(250, '2.1.5', `<${found.value}>`);
      },
    });

    api.registerVerb({
      name: 'EXPN',
      requiresHelo: false,
      handler({ argument }): Reply {
        const { query, utf8 } = splitSmtputf8(argument);
        if (query === '') return needArgument('EXPN');
        if (config.expn === 'cannot-verify') return cannotExpand;
        if (config.expn === 'reject') return expnDisabled;
        const found = lists.find(query);
        if (found.kind === 'none') return notFound;
        if (found.kind === 'ambiguous') return ambiguous;
        const members = found.value;
        if (!utf8 && (nonAscii(found.key) || members.some(nonAscii))) return needsUtf8;
        if (members.length === 0) return reply(250, '2.1.5', `${found.key} has no members`);
        return reply(
          250,
          '2.1.5',
          members.map((m) => `<${m}>`),
        );
      },
    });
  },
});
