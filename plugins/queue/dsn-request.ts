/**
 * What the sender asked for with the DSN extension (RFC 3461): the attributes
 * the `dsn` plugin records (`plugins/dsn/attributes.ts` declares and checks
 * their shape), turned into what the queue needs to decide on reports.
 */

import type { RecipientAttributes } from '../../core/types.ts';
import {
  type EnvelopeDsn,
  envelopeDsnOf,
  type OriginalRecipient,
  recipientDsnOf,
} from '../dsn/attributes.ts';

export type { EnvelopeDsn, OriginalRecipient };
export { envelopeDsnOf };

export interface NotifyRequest {
  readonly success: boolean;
  readonly failure: boolean;
  readonly delay: boolean;
  /** NOTIFY was given (otherwise the RFC 3461 4.1 default applies: FAILURE, and DELAY at our discretion). */
  readonly explicit: boolean;
}

export function notifyOf(attrs: RecipientAttributes): NotifyRequest {
  const list = recipientDsnOf(attrs).notify;
  if (!list) return { success: false, failure: true, delay: true, explicit: false };
  if (list.includes('NEVER')) return { success: false, failure: false, delay: false, explicit: true };
  return {
    success: list.includes('SUCCESS'),
    failure: list.includes('FAILURE'),
    delay: list.includes('DELAY'),
    explicit: true,
  };
}

export function orcptOf(attrs: RecipientAttributes): OriginalRecipient | undefined {
  return recipientDsnOf(attrs).orcpt;
}
