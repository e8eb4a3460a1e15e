/**
 * DKIM signing (RFC 6376, Ed25519 by RFC 8463) of messages from authenticated
 * sessions, or from configured domains that sign unauthenticated mail too.
 * The signature needs the whole body, so it is made in the `message` hook,
 * hashing the spooled message as a stream, and put on top of the message
 * with `Message.prepend`. The computation is `signer.ts` (mailauth signs
 * only the fields present, so it cannot oversign); python3-dkim checks it in
 * the tests.
 */
import type { KeyObject } from 'node:crypto';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import type { Transaction } from '../../core/types.ts';
import { authorDomains, fromFields } from '../dmarc/header-from.ts';
import { readHeaderSection } from './header.ts';
import { loadSigningKey } from './keys.ts';
import { createDkimSigner } from './service.ts';
import { type Canon, hashBody, parseFields, signatureField } from './signer.ts';

const Selector = Type.Object(
  {
    selector: Type.String({
      minLength: 1,
      description: 'The selector (`s=`); the public key is at `<selector>._domainkey.<domain>`.',
    }),
    keyFile: Type.String({
      minLength: 1,
      description:
        'PEM private key (PKCS#8 or PKCS#1): RSA (2048 bits or more) or Ed25519. Read once at start.',
    }),
  },
  { additionalProperties: false },
);

const Domain = Type.Object(
  {
    domain: Type.String({
      minLength: 1,
      description: 'The signing domain (`d=`), matched against the From (else MAIL FROM) domain.',
    }),
    selectors: Type.Array(Selector, {
      minItems: 1,
      description:
        'Every selector signs (one signature each): an RSA and an Ed25519 key side by side, or an old and a new key during rotation.',
    }),
    signUnauthenticated: Type.Boolean({
      default: false,
      description:
        "Sign this domain's mail from unauthenticated sessions too (a trusted relay in front of the server).",
    }),
  },
  { additionalProperties: false },
);

export const defaultHeaders = [
  'from',
  'sender',
  'reply-to',
  'subject',
  'date',
  'message-id',
  'to',
  'cc',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'content-id',
  'in-reply-to',
  'references',
  'list-id',
  'list-unsubscribe',
  'list-unsubscribe-post',
];

const defaultOversign = [
  'from',
  'to',
  'cc',
  'subject',
  'date',
  'reply-to',
  'message-id',
  'mime-version',
  'content-type',
];

export const schema = Type.Object(
  {
    domains: Type.Array(Domain, { default: [], description: 'The domains to sign for, with their keys.' }),
    headers: Type.Array(Type.String({ minLength: 1, pattern: '^[!-9;-~]+$' }), {
      default: defaultHeaders,
      description:
        'Header fields to sign (`h=`), each occurrence present in the message. `from` is always signed, listed or not (RFC 6376 section 5.4).',
    }),
    oversign: Type.Array(Type.String({ minLength: 1, pattern: '^[!-9;-~]+$' }), {
      default: defaultOversign,
      description:
        'Of those, the fields signed once more than they occur, so that nobody can add one later without breaking the signature (RFC 6376 section 8.15). `[]` turns oversigning off.',
    }),
    canonicalization: Type.Union(
      [
        Type.Literal('relaxed/relaxed'),
        Type.Literal('relaxed/simple'),
        Type.Literal('simple/relaxed'),
        Type.Literal('simple/simple'),
      ],
      { default: 'relaxed/relaxed', description: 'Header/body canonicalisation (`c=`).' },
    ),
    maxHeaderBytes: Type.Integer({
      minimum: 1024,
      default: 1024 * 1024,
      description: 'At most this much of the header section is read to find the From domain.',
    }),
  },
  { additionalProperties: false },
);

interface LoadedDomain {
  readonly domain: string;
  readonly signUnauthenticated: boolean;
  readonly keys: readonly { readonly selector: string; readonly key: KeyObject }[];
}

export default definePlugin({
  name: 'dkim-sign',
  description: 'Signs outgoing mail with DKIM (RSA-SHA256 and Ed25519-SHA256), body hashed from the spool.',
  schema,
  async register(api, config) {
    const domains = new Map<string, LoadedDomain>();
    for (const d of config.domains) {
      const keys = await Promise.all(
        d.selectors.map(async (s) => ({
          selector: s.selector,
          key: (await loadSigningKey(s.keyFile)).key,
        })),
      );
      domains.set(d.domain.toLowerCase(), {
        domain: d.domain.toLowerCase(),
        signUnauthenticated: d.signUnauthenticated,
        keys,
      });
    }
    if (domains.size === 0) return;
    const [headerCanon, bodyCanon] = config.canonicalization.split('/') as [Canon, Canon];
    const oversign = new Set(config.oversign.map((n) => n.toLowerCase()));
    // Mail the server writes itself (TLS reports, bounces): signed for any configured domain.
    api.provide(
      'dkimSigner',
      createDkimSigner({
        domains,
        headers: config.headers,
        oversign,
        headerCanon,
        bodyCanon,
        maxHeaderBytes: config.maxHeaderBytes,
        now: () => api.server.clock.now(),
      }),
    );

    const pick = (tx: Transaction, fromHeader: string | undefined): LoadedDomain | undefined => {
      const candidates = [fromHeader, tx.from.address?.asciiDomain.toLowerCase()];
      for (const c of candidates) {
        const d = c === undefined ? undefined : domains.get(c);
        if (d && (tx.session.user !== undefined || d.signUnauthenticated)) return d;
      }
      return undefined;
    };

    api.hooks.message.tap(
      async (tx, message) => {
        if (tx.session.user === undefined && ![...domains.values()].some((d) => d.signUnauthenticated))
          return undefined;
        const head = await readHeaderSection(message.stream(), config.maxHeaderBytes);
        if (head === undefined) {
          tx.log.warn('header section longer than maxHeaderBytes: not signed');
          return undefined;
        }
        // The author domain as DMARC will read it (the first From field's first address), for alignment.
        const d = pick(tx, authorDomains(fromFields(head)[0] ?? '')[0]);
        if (!d) return undefined;
        const fields = parseFields(head);
        const bodyHash = await hashBody(message.stream(), bodyCanon);
        const time = Math.floor(api.server.clock.now() / 1000);
        const signatures = d.keys.map((k) =>
          signatureField(fields, {
            domain: d.domain,
            selector: k.selector,
            key: k.key,
            headerCanon,
            bodyCanon,
            bodyHash,
            headers: config.headers,
            oversign,
            time,
          }),
        );
        message.prepend(signatures);
        tx.log.debug({ domain: d.domain, signatures: signatures.length }, 'DKIM signed');
        return undefined;
      },
      { stage: Stage.LATE },
    );
  },
});
