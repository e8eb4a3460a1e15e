/**
 * SASLprep (RFC 4013), the preparation RFC 4616 section 2 recommends for
 * PLAIN's user names and passwords: non-ASCII spaces become spaces, characters
 * "commonly mapped to nothing" (soft hyphen, zero-width joiners, ...) are
 * dropped, the result is NFKC-normalised, and control, private-use and other
 * prohibited characters (and bad bidirectional text) make it fail.
 *
 * What a client presents is a "query" string (unassigned code points allowed);
 * what is stored (a users file's names, the password before it is hashed) is a
 * "stored" string, where they are refused (RFC 4616 section 2, RFC 3454
 * section 7). The tables come from `@mongodb-js/saslprep`.
 */
import saslprep from '@mongodb-js/saslprep';

export type SaslprepUse = 'query' | 'stored';

/** The prepared string, or undefined when preparation fails or leaves nothing (verification then fails). */
export function prepare(text: string, use: SaslprepUse = 'query'): string | undefined {
  try {
    const prepared = saslprep(text, { allowUnassigned: use === 'query' });
    return prepared === '' ? undefined : prepared;
  } catch {
    // Prohibited output, bidi violation, an unassigned code point in a stored
    // string, or (library quirk) input that maps to nothing at all.
    return undefined;
  }
}
