/**
 * DKIM signing (RFC 6376, Ed25519 by RFC 8463) of messages from authenticated
 * sessions, or from configured domains that sign unauthenticated mail too.
 * The signature needs the whole body, so it is made in the `message` hook,
 * hashing the spooled message as a stream, and put on top of the message
 * with `Message.prepend`.
 */
import { readFile } from 'node:fs/promises';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import type { Transaction } from '../../core/types.ts';
import { readHeaderSection, senderDomain } from './header.ts';

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

export const schema = Type.Object(
  {
    domains: Type.Array(Domain, { default: [], description: 'The domains to sign for, with their keys.' }),
    headers: Type.Array(Type.String({ minLength: 1 }), {
      default: defaultHeaders,
      description: 'Header fields to sign (`h=`), each occurrence present in the message.',
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
  readonly keys: readonly { readonly selector: string; readonly privateKey: string }[];
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
          privateKey: await readFile(s.keyFile, 'utf8'),
        })),
      );
      domains.set(d.domain.toLowerCase(), {
        domain: d.domain.toLowerCase(),
        signUnauthenticated: d.signUnauthenticated,
        keys,
      });
    }
    if (domains.size === 0) return;

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
        const d = pick(tx, senderDomain(head));
        if (!d) return undefined;
        const result = await dkimSign(message.stream(), {
          signingDomain: d.domain,
          selector: d.keys[0]?.selector ?? '',
          privateKey: d.keys[0]?.privateKey ?? '',
          canonicalization: config.canonicalization,
          headerList: config.headers,
          signatureData: d.keys.map((k) => ({
            signingDomain: d.domain,
            selector: k.selector,
            privateKey: k.privateKey,
          })),
        });
        for (const e of result.errors)
          tx.log.warn({ domain: d.domain, selector: e.selector }, 'DKIM signing failed');
        const fields = splitFields(result.signatures);
        message.prepend(fields);
        tx.log.debug({ domain: d.domain, signatures: fields.length }, 'DKIM signed');
        return undefined;
      },
      { stage: Stage.LATE },
    );
  },
});

/** mailauth returns the signatures as one CRLF-terminated block: one entry per field, continuation lines kept. */
export function splitFields(block: string): string[] {
  return block
    .replace(/\r?\n$/, '')
    .split(/\r?\n(?![ \t])/)
    .filter((f) => f.length > 0);
}
