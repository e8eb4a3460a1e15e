/**
 * What the client sends: the envelope of a delivery job, with the attributes
 * other plugins attach (DSN, REQUIRETLS, BODY, SMTPUTF8) read defensively,
 * since their shape is declared elsewhere and arrives through the queue's JSON.
 */
import type { Readable } from 'node:stream';
import type { DeliveryJob } from '../../core/types.ts';

export type BodyType = '7BIT' | '8BITMIME' | 'BINARYMIME';
export type NotifyValue = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

export interface OutboundRecipient {
  readonly address: string;
  /** RFC 3461 NOTIFY: `NEVER` alone, or any of SUCCESS, FAILURE, DELAY. */
  readonly notify?: readonly NotifyValue[];
  /** RFC 3461 ORCPT: address type (`rfc822`, `utf-8`) and the address, not encoded. */
  readonly orcpt?: { readonly type: string; readonly address: string };
}

export interface OutboundEnvelope {
  /** Reverse-path; `''` for the null reverse-path. */
  readonly from: string;
  readonly recipients: readonly OutboundRecipient[];
  /** The BODY the message was received with. */
  readonly body?: BodyType;
  /** The message was received with SMTPUTF8. */
  readonly smtputf8?: boolean;
  /** RFC 8689 REQUIRETLS: send only over verified TLS to a server that offers REQUIRETLS. */
  readonly requireTls?: boolean;
  /** RFC 3461 RET and ENVID. */
  readonly dsn?: { readonly ret?: 'FULL' | 'HDRS'; readonly envid?: string };
  /** The message, a new stream each call. */
  stream(): Readable;
}

const obj = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

const NOTIFY = new Set<string>(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY']);

function readNotify(value: unknown): NotifyValue[] | undefined {
  const items = Array.isArray(value) ? value : typeof value === 'string' ? value.split(',') : undefined;
  if (!items) return undefined;
  const out: NotifyValue[] = [];
  for (const item of items) {
    if (typeof item !== 'string') return undefined;
    const v = item.trim().toUpperCase();
    if (!NOTIFY.has(v)) return undefined;
    if (!out.includes(v as NotifyValue)) out.push(v as NotifyValue);
  }
  if (out.length === 0 || (out.includes('NEVER') && out.length > 1)) return undefined;
  return out;
}

function readBody(value: unknown): BodyType | undefined {
  if (typeof value !== 'string') return undefined;
  const v = value.toUpperCase();
  return v === '7BIT' || v === '8BITMIME' || v === 'BINARYMIME' ? v : undefined;
}

/** `{ type, address }` as the dsn plugin records it, or `type;address`. */
function readOrcpt(value: unknown): { type: string; address: string } | undefined {
  let type: unknown;
  let address: unknown;
  if (typeof value === 'string') {
    const semi = value.indexOf(';');
    if (semi <= 0) return undefined;
    type = value.slice(0, semi);
    address = value.slice(semi + 1);
  } else {
    type = obj(value)?.['type'];
    address = obj(value)?.['address'];
  }
  if (typeof type !== 'string' || typeof address !== 'string') return undefined;
  const t = type.trim().toLowerCase();
  if (!/^[a-z0-9][a-z0-9-]*$/.test(t) || address === '') return undefined;
  return { type: t, address };
}

/** The envelope of a delivery job. */
export function envelopeOf(job: DeliveryJob): OutboundEnvelope {
  const attrs = obj(job.attributes) ?? {};
  const dsnAttrs = obj(attrs['dsn']);
  const ret = typeof dsnAttrs?.['ret'] === 'string' ? dsnAttrs['ret'].toUpperCase() : undefined;
  const envid = typeof dsnAttrs?.['envid'] === 'string' ? dsnAttrs['envid'] : undefined;
  const dsn = {
    ...(ret === 'FULL' || ret === 'HDRS' ? { ret: ret as 'FULL' | 'HDRS' } : {}),
    ...(envid ? { envid } : {}),
  };
  const body = readBody(attrs['body']);
  return {
    from: job.from,
    recipients: job.recipients.map((r) => {
      const d = obj(obj(r.attributes)?.['dsn']);
      const notify = readNotify(d?.['notify']);
      const orcpt = readOrcpt(d?.['orcpt']);
      return {
        address: r.address,
        ...(notify ? { notify } : {}),
        ...(orcpt ? { orcpt } : {}),
      };
    }),
    ...(body ? { body } : {}),
    ...(attrs['smtputf8'] === true ? { smtputf8: true } : {}),
    ...(attrs['requireTls'] === true ? { requireTls: true } : {}),
    ...(Object.keys(dsn).length > 0 ? { dsn } : {}),
    stream: () => job.stream(),
  };
}
