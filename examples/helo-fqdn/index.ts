/**
 * The plugin built step by step in docs/plugins.md. It checks that the
 * EHLO/HELO name is a fully-qualified domain or an address literal
 * (RFC 5321 4.1.1.1), records the result on the session, and lets the
 * configured action decide what happens to the mail.
 */
import { definePlugin, reply, Stage } from 'mailframe';
import Type from 'typebox';

declare module 'mailframe' {
  interface SessionNotes {
    /** Set by helo-fqdn when the client sends EHLO or HELO. */
    heloFqdn?: 'pass' | 'fail';
  }
}

export const schema = Type.Object(
  {
    action: Type.Union([Type.Literal('reject'), Type.Literal('tag')], {
      default: 'tag',
      description: '`reject`: refuse MAIL with 550 5.7.1. `tag`: accept, and add an `X-HELO-Check` header.',
    }),
    allowLiterals: Type.Boolean({
      default: true,
      description: 'Let address literals such as `[192.0.2.1]` pass.',
    }),
  },
  { additionalProperties: false },
);

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

export function isFqdn(name: string): boolean {
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.');
  const top = labels[labels.length - 1] ?? '';
  return labels.length >= 2 && labels.every((l) => LABEL.test(l)) && !/^\d+$/.test(top);
}

export default definePlugin({
  name: 'helo-fqdn',
  description: 'Checks that the EHLO/HELO name is a fully-qualified domain; rejects or tags.',
  schema,
  register(api, config) {
    // The check: record a result, never answer.
    api.hooks.ehlo.tap((session, helo) => {
      const literal = helo.domain.startsWith('[') && helo.domain.endsWith(']');
      const ok = literal ? config.allowLiterals : isFqdn(helo.domain);
      session.notes.heloFqdn = ok ? 'pass' : 'fail';
      return undefined;
    });

    // The policy: the configured action turns the result into a reply or a header.
    if (config.action === 'reject') {
      api.hooks.mail.tap(
        (tx) =>
          tx.session.notes.heloFqdn === 'fail'
            ? reply(550, '5.7.1', 'EHLO/HELO name must be a fully-qualified domain')
            : undefined,
        { stage: Stage.EARLY },
      );
    } else {
      api.hooks.headers.tap((fields, tx) => [
        ...fields,
        `X-HELO-Check: ${tx.session.notes.heloFqdn ?? 'none'}`,
      ]);
    }
  },
});
