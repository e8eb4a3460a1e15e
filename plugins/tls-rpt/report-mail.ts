/**
 * A report as mail (RFC 8460 section 5.3): a `multipart/report;
 * report-type="tlsrpt"` message with a short text part and the gzip'd JSON
 * as an `application/tlsrpt+gzip` attachment (base64), Subject
 * `Report Domain: <domain> Submitter: <submitter> Report-ID: <id>`, and the
 * `TLS-Report-Domain` / `TLS-Report-Submitter` header fields, and
 * `TLS-Required: No` (RFC 8689) so the report gets through a broken policy.
 */
import { randomBytes } from 'node:crypto';
import { foldField, rfc5322Date } from '../queue/mail-format.ts';

export interface ReportMailInput {
  readonly from: string;
  readonly to: string;
  readonly domain: string;
  readonly submitter: string;
  /** `id-left@id-right`, shown in angle brackets in the Subject. */
  readonly reportId: string;
  readonly filename: string;
  readonly gzipped: Buffer;
  readonly date: number;
  /** Day the report covers (`YYYY-MM-DD`), for the text part. */
  readonly day: string;
}

function base64Lines(data: Buffer): string {
  const b64 = data.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  return `${lines.join('\r\n')}\r\n`;
}

/** The whole message, CRLF line endings, 7-bit. */
export function buildReportMail(input: ReportMailInput): Buffer {
  const boundary = `=_tlsrpt_${randomBytes(12).toString('hex')}`;
  const messageId = `${randomBytes(10).toString('hex')}@${input.submitter}`;
  const head = [
    foldField('From', `<${input.from}>`),
    foldField('To', `<${input.to}>`),
    foldField(
      'Subject',
      `Report Domain: ${input.domain} Submitter: ${input.submitter} Report-ID: <${input.reportId}>`,
    ),
    `Date: ${rfc5322Date(input.date)}`,
    `Message-ID: <${messageId}>`,
    foldField('TLS-Report-Domain', input.domain),
    foldField('TLS-Report-Submitter', input.submitter),
    'Auto-Submitted: auto-generated',
    // RFC 8689: deliver even where the destination's TLS policy fails, as RFC 8460 asks of reports.
    'TLS-Required: No',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type="tlsrpt";\r\n boundary="${boundary}"`,
    '',
    'This is an SMTP TLS report (RFC 8460) in MIME format.',
  ].join('\r\n');
  const text = [
    `This is an aggregate TLS report from ${input.submitter}`,
    `about mail sent to ${input.domain} on ${input.day} (UTC).`,
    '',
  ].join('\r\n');
  // The filename contains `!`, which a MIME token may not: it is always quoted.
  const body = [
    `\r\n--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Transfer-Encoding: 7bit',
    '',
    text,
    `--${boundary}`,
    `Content-Type: application/tlsrpt+gzip;\r\n name="${input.filename}"`,
    'Content-Transfer-Encoding: base64',
    `Content-Disposition: attachment;\r\n filename="${input.filename}"`,
    '',
    base64Lines(input.gzipped),
  ].join('\r\n');
  return Buffer.from(`${head}\r\n${body}\r\n--${boundary}--\r\n`, 'ascii');
}
