/** Expected parse results for the address and command parser unit tests. */
import type { PathOptions } from '../../core/address.ts';
import type { Address } from '../../core/types.ts';

/** Path options for MAIL FROM without SMTPUTF8: the null path allowed, Postmaster not special. */
export const MAIL: PathOptions = { utf8: false, allowNull: true, allowPostmaster: false };
/** Path options for RCPT TO without SMTPUTF8: no null path, bare Postmaster allowed. */
export const RCPT: PathOptions = { utf8: false, allowNull: false, allowPostmaster: true };

/** The Address for `local@domain`, with the fields that follow from it by default. */
export function addr(localPart: string, domain: string, extra: Partial<Address> = {}): Address {
  return {
    localPart,
    domain,
    asciiDomain: domain.toLowerCase(),
    domainKind: 'name',
    address: `${localPart}@${domain}`,
    unicode: false,
    ...extra,
  };
}
