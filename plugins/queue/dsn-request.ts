/**
 * What the sender asked for with the DSN extension (RFC 3461), read from the
 * envelope and recipient attributes a DSN plugin records:
 *
 *   tx.attributes.dsn        = { ret?: 'FULL' | 'HDRS', envid?: string }
 *   recipient.attributes.dsn = { notify?: string[], orcpt?: string | { type, address } }
 *
 * Values are read defensively (they come back from JSON on disk); `envid` and
 * an object `orcpt` are expected already xtext-decoded, a string `orcpt` is the
 * raw parameter (`rfc822;a+2Bb@example.com`) and is decoded here.
 */
import type { EnvelopeAttributes, RecipientAttributes } from '../../core/types.ts';

export interface NotifyRequest {
  readonly success: boolean;
  readonly failure: boolean;
  readonly delay: boolean;
  /** NOTIFY was given (otherwise the RFC 3461 4.1 default applies: FAILURE, and DELAY at our discretion). */
  readonly explicit: boolean;
}

export interface OriginalRecipient {
  /** Address type, e.g. `rfc822` or `utf-8`. */
  readonly type: string;
  readonly address: string;
}

export interface EnvelopeDsn {
  readonly ret: 'FULL' | 'HDRS' | undefined;
  readonly envid: string | undefined;
}

function dsnOf(attrs: object): Record<string, unknown> | undefined {
  const v = (attrs as Record<string, unknown>)['dsn'];
  return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
}

export function notifyOf(attrs: RecipientAttributes): NotifyRequest {
  const raw = dsnOf(attrs)?.['notify'];
  const list =
    typeof raw === 'string'
      ? raw.split(',')
      : Array.isArray(raw)
        ? raw.filter((x): x is string => typeof x === 'string')
        : undefined;
  if (!list || list.length === 0) return { success: false, failure: true, delay: true, explicit: false };
  const set = new Set(list.map((s) => s.trim().toUpperCase()));
  if (set.has('NEVER')) return { success: false, failure: false, delay: false, explicit: true };
  return {
    success: set.has('SUCCESS'),
    failure: set.has('FAILURE'),
    delay: set.has('DELAY'),
    explicit: true,
  };
}

/** Decode RFC 3461 xtext (`+XX` hex escapes). */
export function decodeXtext(s: string): string {
  return s.replace(/\+([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

export function orcptOf(attrs: RecipientAttributes): OriginalRecipient | undefined {
  const raw = dsnOf(attrs)?.['orcpt'];
  if (typeof raw === 'string') {
    const semi = raw.indexOf(';');
    if (semi <= 0) return undefined;
    const type = raw.slice(0, semi).trim();
    const address = raw.slice(semi + 1).trim();
    return { type, address: type.toLowerCase() === 'utf-8' ? address : decodeXtext(address) };
  }
  if (typeof raw === 'object' && raw !== null) {
    const o = raw as Record<string, unknown>;
    const type = o['type'] ?? o['addrType'] ?? o['addressType'];
    const address = o['address'] ?? o['addr'];
    if (typeof type === 'string' && typeof address === 'string') return { type, address };
  }
  return undefined;
}

export function envelopeDsnOf(attrs: EnvelopeAttributes): EnvelopeDsn {
  const d = dsnOf(attrs);
  const ret = typeof d?.['ret'] === 'string' ? d['ret'].toUpperCase() : undefined;
  const envid = typeof d?.['envid'] === 'string' ? d['envid'] : undefined;
  return { ret: ret === 'FULL' || ret === 'HDRS' ? ret : undefined, envid };
}
