/** The DSN request (RFC 3461) as it travels with the message into the queue. */

/** When the client asked for a notification (RFC 3461 section 4.1). `NEVER` stands alone. */
export type NotifyCondition = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

export interface EnvelopeDsn {
  /** RET: return the full message or only its headers in a failure DSN (RFC 3461 section 4.3). */
  ret?: 'FULL' | 'HDRS';
  /** ENVID, xtext-decoded: the sender's envelope identifier, echoed in DSNs (RFC 3461 section 4.4). */
  envid?: string;
}

export interface OriginalRecipient {
  /** Address type, lower case, e.g. `rfc822` or `utf-8` (RFC 6533). */
  type: string;
  /** The address, decoded from xtext (and from `\x{HEX}` escapes for `utf-8`). */
  address: string;
}

export interface RecipientDsn {
  /** NOTIFY conditions in the order given; absent means the default (failure and delay). */
  notify?: NotifyCondition[];
  /** ORCPT: the recipient as the original sender gave it (RFC 3461 section 4.2). */
  orcpt?: OriginalRecipient;
}

declare module '../../core/types.ts' {
  interface EnvelopeAttributes {
    /** DSN parameters of MAIL (RFC 3461), set by the dsn plugin. */
    dsn?: EnvelopeDsn;
  }
  interface RecipientAttributes {
    /** DSN parameters of RCPT (RFC 3461), set by the dsn plugin. */
    dsn?: RecipientDsn;
  }
}

const CONDITIONS = new Set<string>(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY']);

const record = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/**
 * The envelope's DSN request as this plugin recorded it, checked again: it
 * comes back from JSON on disk (queue files), so anything malformed is dropped.
 */
export function envelopeDsnOf(attrs: object): EnvelopeDsn {
  const d = record((attrs as Record<string, unknown>)['dsn']);
  const ret = d?.['ret'];
  const envid = d?.['envid'];
  return {
    ...(ret === 'FULL' || ret === 'HDRS' ? { ret } : {}),
    ...(typeof envid === 'string' && envid !== '' ? { envid } : {}),
  };
}

/** A recipient's DSN request as this plugin recorded it, checked again (see `envelopeDsnOf`). */
export function recipientDsnOf(attrs: object): RecipientDsn {
  const d = record((attrs as Record<string, unknown>)['dsn']);
  const out: RecipientDsn = {};
  const notify = d?.['notify'];
  if (
    Array.isArray(notify) &&
    notify.length > 0 &&
    notify.every((n) => typeof n === 'string' && CONDITIONS.has(n))
  ) {
    const list = [...new Set(notify as NotifyCondition[])];
    if (!list.includes('NEVER') || list.length === 1) out.notify = list;
  }
  const orcpt = record(d?.['orcpt']);
  if (
    typeof orcpt?.['type'] === 'string' &&
    typeof orcpt['address'] === 'string' &&
    orcpt['address'] !== ''
  ) {
    out.orcpt = { type: orcpt['type'].toLowerCase(), address: orcpt['address'] };
  }
  return out;
}
