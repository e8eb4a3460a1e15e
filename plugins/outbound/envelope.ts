/**
 * What the client sends: the envelope of a delivery job, with the attributes
 * other plugins attach (DSN, REQUIRETLS, BODY, SMTPUTF8), checked again since
 * they arrive through the queue's JSON. The DSN shape is the `dsn` plugin's
 * (`plugins/dsn/attributes.ts`).
 */
import type { Readable } from 'node:stream';
import type { DeliveryJob } from '../../core/types.ts';
import { envelopeDsnOf, type NotifyCondition, recipientDsnOf } from '../dsn/attributes.ts';

export type BodyType = '7BIT' | '8BITMIME' | 'BINARYMIME';

export interface OutboundRecipient {
  readonly address: string;
  /** RFC 3461 NOTIFY: `NEVER` alone, or any of SUCCESS, FAILURE, DELAY. */
  readonly notify?: readonly NotifyCondition[];
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
  /** A TLS report (RFC 8460) being delivered: its sessions are left out of the reports. */
  readonly tlsReport?: boolean;
  /** RFC 3461 RET and ENVID. */
  readonly dsn?: { readonly ret?: 'FULL' | 'HDRS'; readonly envid?: string };
  /** The message, a new stream each call. */
  stream(): Readable;
}

const obj = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

function readBody(value: unknown): BodyType | undefined {
  if (typeof value !== 'string') return undefined;
  const v = value.toUpperCase();
  return v === '7BIT' || v === '8BITMIME' || v === 'BINARYMIME' ? v : undefined;
}

/** The envelope of a delivery job. */
export function envelopeOf(job: DeliveryJob): OutboundEnvelope {
  const attrs = obj(job.attributes) ?? {};
  const dsn = envelopeDsnOf(attrs);
  const body = readBody(attrs['body']);
  return {
    from: job.from,
    recipients: job.recipients.map((r) => {
      const { notify, orcpt } = recipientDsnOf(r.attributes);
      return {
        address: r.address,
        ...(notify ? { notify } : {}),
        ...(orcpt ? { orcpt } : {}),
      };
    }),
    ...(body ? { body } : {}),
    ...(attrs['smtputf8'] === true ? { smtputf8: true } : {}),
    ...(attrs['requireTls'] === true ? { requireTls: true } : {}),
    ...(attrs['tlsReport'] === true ? { tlsReport: true } : {}),
    ...(Object.keys(dsn).length > 0 ? { dsn } : {}),
    stream: () => job.stream(),
  };
}
