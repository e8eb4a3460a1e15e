/**
 * Delivery status notifications (RFC 3464) in a `multipart/report` (RFC 6522):
 * a human-readable part, a `message/delivery-status` part with per-message and
 * per-recipient fields, and the returned message (`message/rfc822`) or only
 * its header section (`text/rfc822-headers`).
 *
 * When an address or the returned header section is not ASCII, the RFC 6533
 * types are used instead: `message/global-delivery-status` with `utf-8`
 * address types, and `message/global` / `message/global-headers`.
 */
import { randomBytes } from 'node:crypto';
import type { OriginalRecipient } from './dsn-request.ts';
import { foldField, hasNonAscii, oneLine, rfc5322Date } from './mail-format.ts';
import type { ReplyRecord } from './types.ts';

export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed';

export interface DsnRecipient {
  /** Final-Recipient: the address this server tried. */
  readonly address: string;
  /** Original-Recipient, from the ORCPT parameter. */
  readonly original?: OriginalRecipient | undefined;
  readonly action: DsnAction;
  /** RFC 3463 status code, e.g. `5.1.1`. */
  readonly status: string;
  readonly remoteMta?: string | undefined;
  /** The reply behind the status (Diagnostic-Code). */
  readonly diagnostic?: ReplyRecord | undefined;
  readonly lastAttemptAt?: number | undefined;
  /** Delayed: when the queue will give up. */
  readonly willRetryUntil?: number | undefined;
}

export type ReturnedContent =
  | { readonly kind: 'full'; readonly message: Buffer }
  | { readonly kind: 'headers'; readonly headers: Buffer; readonly why?: string };

export interface DsnInput {
  /** This server's host name (Reporting-MTA, and the MAILER-DAEMON address). */
  readonly reportingMta: string;
  /** The original sender: the DSN's recipient. */
  readonly to: string;
  readonly envid?: string | undefined;
  readonly arrivalDate: number;
  readonly queueId: string;
  readonly recipients: readonly DsnRecipient[];
  readonly returned: ReturnedContent | undefined;
  /** When the DSN is written (the Date field). */
  readonly date: number;
  /** Message-ID without angle brackets (default: random at `reportingMta`). */
  readonly messageId?: string;
  /** MIME boundary (default: random, checked against the returned content). */
  readonly boundary?: string;
}

export interface BuiltDsn {
  readonly message: Buffer;
  /** Contains octets above 127: send with BODY=8BITMIME. */
  readonly eightBit: boolean;
  /** Uses UTF-8 addresses or headers: needs SMTPUTF8. */
  readonly utf8: boolean;
}

/** The status code a reply stands for: its enhanced code, else the class of its code. */
export function statusOf(reply: ReplyRecord | undefined, fallback: string): string {
  if (reply?.enhanced && /^[245]\.\d{1,3}\.\d{1,3}$/.test(reply.enhanced)) return reply.enhanced;
  if (reply && reply.code >= 200 && reply.code < 600) return `${Math.floor(reply.code / 100)}.0.0`;
  return fallback;
}

const SUBJECTS: Readonly<Record<DsnAction, string>> = {
  failed: 'Undelivered Mail Returned to Sender',
  delayed: 'Delayed Mail (still being retried)',
  delivered: 'Successful Mail Delivery Report',
  relayed: 'Successful Mail Delivery Report',
};

function mainAction(recipients: readonly DsnRecipient[]): DsnAction {
  for (const a of ['failed', 'delayed', 'delivered', 'relayed'] as const) {
    if (recipients.some((r) => r.action === a)) return a;
  }
  return 'failed';
}

function describeReply(r: DsnRecipient): string {
  if (r.diagnostic) {
    const d = r.diagnostic;
    // Keep lines well within RFC 5322's 998 octets whatever the remote said.
    return oneLine(`${d.code}${d.enhanced ? ` ${d.enhanced}` : ''} ${oneLine(d.text)}`).slice(0, 900);
  }
  return `status ${r.status}`;
}

function humanText(input: DsnInput): string {
  const lines = [`This is the mail system at ${input.reportingMta}.`, ''];
  const group = (a: DsnAction, intro: string[]) => {
    const rs = input.recipients.filter((r) => r.action === a);
    if (rs.length === 0) return;
    lines.push(...intro, '');
    for (const r of rs) {
      lines.push(`  <${r.address}>`);
      lines.push(`    ${describeReply(r)}${r.remoteMta ? ` (from ${oneLine(r.remoteMta)})` : ''}`);
    }
    lines.push('');
  };
  group('failed', [
    'Your message could not be delivered to the recipients below. The',
    'mail system has given up on them; the reason is shown for each.',
  ]);
  const until = input.recipients.find((r) => r.action === 'delayed')?.willRetryUntil;
  group('delayed', [
    'Your message has not been delivered yet to the recipients below.',
    until === undefined
      ? 'The mail system will keep trying; you do not need to send it again.'
      : `The mail system will keep trying until ${rfc5322Date(until)};`,
    ...(until === undefined ? [] : ['you do not need to send it again.']),
  ]);
  group('delivered', ['Your message was delivered to the recipients below.']);
  group('relayed', ['Your message was passed on to the recipients below.']);
  const returned = input.returned;
  if (returned?.kind === 'full') lines.push('Your message is attached below.');
  else if (returned?.kind === 'headers') {
    lines.push(
      `The header section of your message is attached below${returned.why ? ` (${returned.why})` : ''}.`,
    );
  }
  lines.push('', `Queue id: ${input.queueId}`);
  return `${lines.join('\r\n')}\r\n`;
}

function addressField(name: string, type: string, address: string): string {
  return foldField(name, `${type}; ${address}`);
}

function statusPart(input: DsnInput, utf8: boolean): string {
  const addrType = (a: string) => (utf8 && hasNonAscii(a) ? 'utf-8' : 'rfc822');
  const msg = [foldField('Reporting-MTA', `dns; ${input.reportingMta}`)];
  msg.push(`X-Mailframe-Queue-ID: ${input.queueId}`);
  if (input.envid !== undefined && input.envid !== '') {
    msg.push(foldField('Original-Envelope-Id', oneLine(input.envid)));
  }
  msg.push(`Arrival-Date: ${rfc5322Date(input.arrivalDate)}`);
  const blocks = [msg.join('\r\n')];
  for (const r of input.recipients) {
    const f: string[] = [];
    if (r.original) f.push(addressField('Original-Recipient', r.original.type, oneLine(r.original.address)));
    f.push(addressField('Final-Recipient', addrType(r.address), r.address));
    f.push(`Action: ${r.action}`);
    f.push(`Status: ${r.status}`);
    if (r.remoteMta) f.push(foldField('Remote-MTA', `dns; ${oneLine(r.remoteMta)}`));
    if (r.diagnostic) f.push(foldField('Diagnostic-Code', `smtp; ${describeReply(r)}`));
    if (r.lastAttemptAt !== undefined) f.push(`Last-Attempt-Date: ${rfc5322Date(r.lastAttemptAt)}`);
    if (r.willRetryUntil !== undefined) f.push(`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`);
    blocks.push(f.join('\r\n'));
  }
  return `${blocks.join('\r\n\r\n')}\r\n`;
}

function pickBoundary(input: DsnInput): string {
  if (input.boundary) return input.boundary;
  const content = input.returned?.kind === 'full' ? input.returned.message : input.returned?.headers;
  for (;;) {
    const b = `=_mailframe_${randomBytes(12).toString('hex')}`;
    if (!content?.includes(b)) return b;
  }
}

/** Build the whole DSN message (header section and body), CRLF line endings. */
export function buildDsn(input: DsnInput): BuiltDsn {
  const action = mainAction(input.recipients);
  const returned = input.returned;
  const returnedBytes = returned?.kind === 'full' ? returned.message : returned?.headers;
  const returnedHeaderSection =
    returned?.kind === 'full' ? headerSection(returned.message) : (returned?.headers ?? Buffer.alloc(0));
  const utf8 =
    hasNonAscii(input.to) ||
    input.recipients.some((r) => hasNonAscii(r.address) || (r.original && hasNonAscii(r.original.address))) ||
    hasNonAscii(returnedHeaderSection);
  const boundary = pickBoundary(input);
  const messageId = input.messageId ?? `${randomBytes(10).toString('hex')}@${input.reportingMta}`;
  const text = humanText(input);
  const textIs8bit = hasNonAscii(text);
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    `To: <${input.to}>`,
    `Subject: ${SUBJECTS[action]}`,
    `Date: ${rfc5322Date(input.date)}`,
    `Message-ID: <${messageId}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;\r\n boundary="${boundary}"`,
    '',
    'This is a delivery status notification in MIME format (RFC 3464).',
  ].join('\r\n');
  const parts: Buffer[] = [Buffer.from(head, 'utf8')];
  // The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1), so bodies keep their own.
  const part = (headers: string[], body: Buffer | string) => {
    parts.push(Buffer.from(`\r\n--${boundary}\r\n${headers.join('\r\n')}\r\n\r\n`, 'utf8'));
    parts.push(typeof body === 'string' ? Buffer.from(body, 'utf8') : body);
  };
  part(
    [
      `Content-Type: text/plain; charset=${textIs8bit ? 'utf-8' : 'us-ascii'}`,
      `Content-Transfer-Encoding: ${textIs8bit ? '8bit' : '7bit'}`,
      'Content-Description: Notification',
    ],
    text,
  );
  part(
    [
      `Content-Type: message/${utf8 ? 'global-delivery-status' : 'delivery-status'}`,
      ...(utf8 ? ['Content-Transfer-Encoding: 8bit'] : []),
      'Content-Description: Delivery report',
    ],
    statusPart(input, utf8),
  );
  let eightBit = textIs8bit || utf8;
  if (returned && returnedBytes) {
    const is8bit = hasNonAscii(returnedBytes);
    eightBit ||= is8bit;
    const type =
      returned.kind === 'full'
        ? utf8
          ? 'message/global'
          : 'message/rfc822'
        : utf8
          ? 'message/global-headers'
          : 'text/rfc822-headers';
    const body = returned.kind === 'headers' ? withCrlfEnd(returned.headers) : withCrlfEnd(returned.message);
    part(
      [
        `Content-Type: ${type}`,
        ...(is8bit ? ['Content-Transfer-Encoding: 8bit'] : []),
        `Content-Description: ${returned.kind === 'full' ? 'Undelivered message' : 'Undelivered message headers'}`,
      ],
      body,
    );
  }
  parts.push(Buffer.from(`\r\n--${boundary}--\r\n`, 'utf8'));
  return { message: Buffer.concat(parts), eightBit, utf8 };
}

function withCrlfEnd(b: Buffer): Buffer {
  if (b.length >= 2 && b[b.length - 2] === 13 && b[b.length - 1] === 10) return b;
  return Buffer.concat([b, Buffer.from('\r\n')]);
}

/** The header section of a message: everything before the first empty line (without it). */
export function headerSection(message: Buffer): Buffer {
  if (message.length >= 2 && message[0] === 13 && message[1] === 10) return Buffer.alloc(0);
  const end = message.indexOf('\r\n\r\n');
  return end < 0 ? message : message.subarray(0, end + 2);
}
