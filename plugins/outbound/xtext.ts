/**
 * xtext (RFC 3461 section 4): the encoding of DSN parameter values (ENVID,
 * ORCPT). Printable ASCII other than `+` and `=` stands for itself; every other
 * octet (of the UTF-8 form) becomes `+` and two upper-case hex digits.
 */
export function encodeXtext(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    if (byte >= 0x21 && byte <= 0x7e && byte !== 0x2b && byte !== 0x3d) out += String.fromCharCode(byte);
    else out += `+${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * The ORCPT value `addr-type;xtext` (RFC 3461 4.2). A `utf-8` address (RFC 6533)
 * uses utf-8-addr-xtext: `\x{HEX}` for non-ASCII, `+`, `=` and backslash, which
 * is valid with or without SMTPUTF8. An `rfc822` address that is not ASCII is
 * sent as `utf-8`.
 */
export function encodeOrcpt(type: string, address: string): string {
  const ascii = /^[\x00-\x7f]*$/.test(address);
  if (type === 'utf-8' || (type === 'rfc822' && !ascii)) {
    let out = '';
    for (const ch of address) {
      const cp = ch.codePointAt(0) as number;
      const plain = cp >= 0x21 && cp <= 0x7e && ch !== '+' && ch !== '=' && ch !== '\\';
      out += plain ? ch : `\\x{${cp.toString(16).toUpperCase()}}`;
    }
    return `utf-8;${out}`;
  }
  return `${type};${encodeXtext(address)}`;
}
