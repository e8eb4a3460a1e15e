/**
 * The aggregate report format of RFC 8460 section 4 as a JSON Schema, for
 * the tests to validate reports with ajv. The RFC describes the format in
 * prose and a JSON outline of the report (it ships no JSON Schema of its
 * own); this writes that outline down: the report-level fields, the policy
 * and summary fields, the failure details with the RFC's result types, and
 * date-times as RFC 3339 `date-time`. Unknown fields are refused, so a
 * misspelt field name fails the test.
 */
import { Ajv } from 'ajv';

const DATE_TIME = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(?:\\.\\d+)?(?:Z|[+-]\\d{2}:\\d{2})$';
const A_LABEL_DOMAIN = '^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$';
const IP = '^(?:\\d{1,3}(?:\\.\\d{1,3}){3}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$';

export const RESULT_TYPES = [
  'starttls-not-supported',
  'certificate-host-mismatch',
  'certificate-expired',
  'certificate-not-trusted',
  'validation-failure',
  'tlsa-invalid',
  'dnssec-invalid',
  'dane-required',
  'sts-policy-fetch-error',
  'sts-policy-invalid',
  'sts-webpki-invalid',
] as const;

const count = { type: 'integer', minimum: 0 };
const strings = { type: 'array', items: { type: 'string' } };

export const TLSRPT_REPORT_SCHEMA = {
  type: 'object',
  required: ['organization-name', 'date-range', 'contact-info', 'report-id', 'policies'],
  additionalProperties: false,
  properties: {
    'organization-name': { type: 'string', minLength: 1 },
    'date-range': {
      type: 'object',
      required: ['start-datetime', 'end-datetime'],
      additionalProperties: false,
      properties: {
        'start-datetime': { type: 'string', pattern: DATE_TIME },
        'end-datetime': { type: 'string', pattern: DATE_TIME },
      },
    },
    'contact-info': { type: 'string', minLength: 1 },
    'report-id': { type: 'string', minLength: 1 },
    policies: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['policy', 'summary'],
        additionalProperties: false,
        properties: {
          policy: {
            type: 'object',
            required: ['policy-type', 'policy-domain'],
            additionalProperties: false,
            properties: {
              'policy-type': { enum: ['tlsa', 'sts', 'no-policy-found'] },
              'policy-string': strings,
              'policy-domain': { type: 'string', pattern: A_LABEL_DOMAIN },
              'mx-host': strings,
            },
          },
          summary: {
            type: 'object',
            required: ['total-successful-session-count', 'total-failure-session-count'],
            additionalProperties: false,
            properties: {
              'total-successful-session-count': count,
              'total-failure-session-count': count,
            },
          },
          'failure-details': {
            type: 'array',
            items: {
              type: 'object',
              required: ['result-type', 'failed-session-count'],
              additionalProperties: false,
              properties: {
                'result-type': { enum: [...RESULT_TYPES] },
                'sending-mta-ip': { type: 'string', pattern: IP },
                'receiving-mx-hostname': { type: 'string', minLength: 1 },
                'receiving-mx-helo': { type: 'string', minLength: 1 },
                'receiving-ip': { type: 'string', pattern: IP },
                'failed-session-count': count,
                'additional-information': { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9+.-]*:' },
                'failure-reason-code': { type: 'string' },
              },
            },
          },
        },
      },
    },
  },
} as const;

const validate = new Ajv({ strict: true, allErrors: true }).compile(TLSRPT_REPORT_SCHEMA);

/** Throws with ajv's errors when `report` does not follow RFC 8460 section 4. */
export function assertValidTlsReport(report: unknown): void {
  if (!validate(report)) {
    throw new Error(`not an RFC 8460 report: ${JSON.stringify(validate.errors, null, 2)}`);
  }
}
