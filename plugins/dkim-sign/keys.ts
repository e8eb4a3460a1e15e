/** DKIM key pairs, the DNS TXT record that publishes the public half (RFC 6376 3.6.1, RFC 8463 4), and loading a signing key. */
import { createPrivateKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

export type DkimKeyType = 'rsa' | 'ed25519';

export interface DkimKeyPair {
  readonly type: DkimKeyType;
  /** The private key, PKCS#8 PEM: what `dkim-sign`'s `keyFile` holds. */
  readonly privateKeyPem: string;
  /** The TXT record's value (`v=DKIM1; k=...; p=...`). */
  readonly record: string;
}

const generate = promisify(generateKeyPair);

/** A new key pair: RSA-2048 or Ed25519. */
export async function generateDkimKeyPair(type: DkimKeyType): Promise<DkimKeyPair> {
  const { publicKey, privateKey } =
    type === 'rsa' ? await generate('rsa', { modulusLength: 2048 }) : await generate('ed25519');
  return {
    type,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    record: dkimRecord(type, publicKey),
  };
}

/** `p=` is the SubjectPublicKeyInfo for RSA, the bare 32-octet key for Ed25519 (RFC 8463 section 4). */
export function dkimRecord(type: DkimKeyType, publicKey: KeyObject): string {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const p = (type === 'ed25519' ? spki.subarray(spki.length - 32) : spki).toString('base64');
  return `v=DKIM1; k=${type}; p=${p}`;
}

/** A TXT value cut into character-strings of at most 255 octets (RFC 1035 3.3.14), as DNS carries it. */
export function txtStrings(value: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < value.length; i += 255) out.push(value.slice(i, i + 255));
  return out;
}

/**
 * A signing key (DKIM, ARC) from a PEM file, PKCS#8 or PKCS#1: RSA of 1024 bits or more
 * (RFC 8301 section 3.2), or Ed25519. Both the PEM text and the parsed key are returned.
 */
export async function loadSigningKey(
  file: string,
): Promise<{ readonly pem: string; readonly key: KeyObject }> {
  const pem = await readFile(file, 'utf8');
  const key = createPrivateKey(pem);
  const type = key.asymmetricKeyType;
  if (type === 'ed25519' || (type === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 1024))
    return { pem, key };
  throw new Error(`${file}: not an RSA key of 1024 bits or more, nor an Ed25519 key`);
}
