/**
 * The STARTTLS command (RFC 3207 section 4): `220` then the handshake. The
 * core discards anything the client pipelined after the command before the
 * handshake starts and resets the session after it (EHLO is needed again).
 */
import type { VerbDefinition } from '../../core/plugin.ts';
import { Replies, reply } from '../../core/reply.ts';
import type { Session } from '../../core/types.ts';
import type { CertificateStore } from './certificate-store.ts';

const ready = reply(220, '2.0.0', 'Ready to start TLS');
const noArguments = reply(501, '5.5.4', 'STARTTLS takes no arguments');
const alreadyTls = reply(503, '5.5.1', 'TLS already active');
const afterAuth = reply(503, '5.5.1', 'STARTTLS not allowed after AUTH');

export function starttlsVerb(store: CertificateStore, inScope: (s: Session) => boolean): VerbDefinition {
  return {
    name: 'STARTTLS',
    outsideTransaction: true,
    async handler(ctx) {
      const { session } = ctx;
      if (!inScope(session)) return Replies.unknownCommand;
      if (ctx.argument !== '') return noArguments;
      if (session.tls) return alreadyTls;
      // What was learnt before TLS must not survive it (RFC 3207 section 4.2); an identity would.
      if (session.user !== undefined) return afterAuth;
      ctx.send(ready);
      try {
        await ctx.upgradeToTls(store.serverOptions());
      } catch {
        // The core logged the failed handshake and closed the connection: nothing to answer.
      }
      return undefined;
    },
  };
}
