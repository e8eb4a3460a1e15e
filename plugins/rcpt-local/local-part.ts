/**
 * Local parts as mailbox names, shared by the plugins that judge recipients
 * (`rcpt-local`, `relay-acl`).
 */

/** The local part as a mailbox name: quotes and backslash escapes removed (`"a\"b"` is `a"b`). */
export function unquotedLocalPart(localPart: string): string {
  if (!localPart.startsWith('"')) return localPart;
  return localPart.slice(1, -1).replace(/\\(.)/g, '$1');
}

/** Whether a (unquoted) local part names a further destination: `%`, `!` or `@` in it. */
export function isRoutingLocalPart(local: string): boolean {
  return local.includes('%') || local.includes('!') || local.includes('@');
}
