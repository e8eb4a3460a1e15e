/** A DKIM-Signature field for a bench message, made as dkim-sign makes it (relaxed/relaxed, oversigned From). */
import type { KeyObject } from 'node:crypto';
import { Readable } from 'node:stream';
import { defaultHeaders } from '../plugins/dkim-sign/index.ts';
import { hashBody, parseFields, signatureField } from '../plugins/dkim-sign/signer.ts';

/** The field (without its CRLF) signing `text`, a whole message with CRLF line endings, for `domain`/`selector`. */
export async function dkimSignatureFor(
  text: string,
  key: KeyObject,
  domain: string,
  selector: string,
): Promise<string> {
  const end = text.indexOf('\r\n\r\n');
  const bodyHash = await hashBody(Readable.from([Buffer.from(text, 'latin1')]), 'relaxed');
  return signatureField(parseFields(text.slice(0, end + 2)), {
    domain,
    selector,
    key,
    headerCanon: 'relaxed',
    bodyCanon: 'relaxed',
    bodyHash,
    headers: defaultHeaders,
    oversign: new Set(['from']),
    time: Math.floor(Date.now() / 1000),
  });
}
