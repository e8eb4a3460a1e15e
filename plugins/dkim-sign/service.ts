/**
 * The `dkimSigner` service: DKIM-signs mail the server writes itself (TLS
 * reports, bounces) before it is queued, with the keys, headers, oversigning
 * and canonicalisation `dkim-sign` uses for SMTP mail. The key is picked by
 * the From domain (or `opts.domain`); with no matching domain the content is
 * returned unchanged. The header section is read up to `maxHeaderBytes` and
 * the body hashed from the content's stream.
 */
import type { KeyObject } from 'node:crypto';
import { Readable } from 'node:stream';
import { authorDomains, fromFields } from '../dmarc/header-from.ts';
import type { MessageContent } from '../queue/types.ts';
import { readHeaderSection } from './header.ts';
import { type Canon, hashBody, parseFields, signatureField } from './signer.ts';

export interface DkimSignerService {
  /** Whether a key is configured for `domain`. */
  canSign(domain: string): boolean;
  /** `content` with DKIM-Signature fields on top, or unchanged when no key matches. */
  sign(content: MessageContent, opts?: { readonly domain?: string }): Promise<MessageContent>;
}

declare module '../../core/plugin.ts' {
  interface Services {
    dkimSigner: DkimSignerService;
  }
}

export interface SignerDomain {
  readonly domain: string;
  readonly keys: readonly { readonly selector: string; readonly key: KeyObject }[];
}

export interface SignerSettings {
  readonly domains: ReadonlyMap<string, SignerDomain>;
  readonly headers: readonly string[];
  readonly oversign: ReadonlySet<string>;
  readonly headerCanon: Canon;
  readonly bodyCanon: Canon;
  readonly maxHeaderBytes: number;
  /** Milliseconds since the epoch (`t=`). */
  readonly now: () => number;
}

const streamOf = (content: MessageContent): Readable =>
  Buffer.isBuffer(content) ? Readable.from([content]) : content.stream();

export function createDkimSigner(s: SignerSettings): DkimSignerService {
  return Object.freeze({
    canSign: (domain: string) => s.domains.has(domain.toLowerCase()),
    async sign(content: MessageContent, opts?: { readonly domain?: string }): Promise<MessageContent> {
      const head = await readHeaderSection(streamOf(content), s.maxHeaderBytes);
      if (head === undefined) return content;
      const name = opts?.domain ?? authorDomains(fromFields(head)[0] ?? '')[0];
      const d = name === undefined ? undefined : s.domains.get(name.toLowerCase());
      if (!d) return content;
      const fields = parseFields(head);
      const bodyHash = await hashBody(streamOf(content), s.bodyCanon);
      const time = Math.floor(s.now() / 1000);
      const prefix = Buffer.from(
        d.keys
          .map(
            (k) =>
              `${signatureField(fields, {
                domain: d.domain,
                selector: k.selector,
                key: k.key,
                headerCanon: s.headerCanon,
                bodyCanon: s.bodyCanon,
                bodyHash,
                headers: s.headers,
                oversign: s.oversign,
                time,
              })}\r\n`,
          )
          .join(''),
        'latin1',
      );
      if (Buffer.isBuffer(content)) return Buffer.concat([prefix, content]);
      const rest = content;
      return {
        size: prefix.length + rest.size,
        stream: () =>
          Readable.from(
            (async function* () {
              yield prefix;
              yield* rest.stream();
            })(),
          ),
      };
    },
  });
}
