/**
 * Config pieces shared by the plugins that deliver through the outbound
 * client (relay-smarthost, deliver-lmtp), and their translation into client
 * options.
 */
import { readFile } from 'node:fs/promises';
import Type, { type Static } from 'typebox';
import type { TlsSettings } from './connection.ts';
import { DEFAULT_TIMEOUTS, type SmtpTimeouts, type TlsMode } from './smtp-client.ts';

const ms = (description: string, dflt: number) => Type.Integer({ minimum: 1, default: dflt, description });

export const TimeoutsSchema = Type.Object(
  {
    connect: ms('TCP connect (and an implicit TLS handshake).', DEFAULT_TIMEOUTS.connect),
    greeting: ms('The 220 greeting (RFC 5321 4.5.3.2.1: 5 minutes).', DEFAULT_TIMEOUTS.greeting),
    command: ms('EHLO/LHLO, STARTTLS and its handshake, AUTH.', DEFAULT_TIMEOUTS.command),
    mail: ms('The reply to MAIL (RFC 5321 4.5.3.2.2: 5 minutes).', DEFAULT_TIMEOUTS.mail),
    rcpt: ms('The reply to each RCPT (RFC 5321 4.5.3.2.3: 5 minutes).', DEFAULT_TIMEOUTS.rcpt),
    dataInit: ms('The 354 reply to DATA (RFC 5321 4.5.3.2.4: 2 minutes).', DEFAULT_TIMEOUTS.dataInit),
    dataBlock: ms(
      'Sending each block of data, and each BDAT reply but the last (RFC 5321 4.5.3.2.5: 3 minutes).',
      DEFAULT_TIMEOUTS.dataBlock,
    ),
    dataFinal: ms(
      'The reply after the final dot or BDAT LAST (RFC 5321 4.5.3.2.6: 10 minutes).',
      DEFAULT_TIMEOUTS.dataFinal,
    ),
  },
  {
    additionalProperties: false,
    default: {},
    description:
      'Client timeouts in milliseconds. Keep the plugin entry `timeout` (or `timeouts.delivery`) above their sum.',
  },
);

export const TlsModeSchema = (dflt: TlsMode) =>
  Type.Union(
    [Type.Literal('opportunistic'), Type.Literal('required'), Type.Literal('implicit'), Type.Literal('none')],
    {
      default: dflt,
      description:
        '`opportunistic`: STARTTLS when offered; `required`: STARTTLS or defer the message (4.7.4); `implicit`: TLS from the first byte (port 465); `none`: never TLS.',
    },
  );

export const TlsCheckProperties = {
  rejectUnauthorized: Type.Boolean({
    default: true,
    description:
      'Refuse a TLS certificate that does not verify (chain and host name); the message is deferred (4.7.5).',
  }),
  servername: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Name sent as SNI and checked against the certificate (default: `host` when it is a name).',
    }),
  ),
  caFile: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'PEM file of CA certificates to trust instead of the system store (a private CA).',
    }),
  ),
};

export const ChunkingProperty = Type.Boolean({
  default: true,
  description:
    'Send with BDAT when the server offers CHUNKING (RFC 3030); BINARYMIME messages always need it.',
});

export function clientTimeouts(t: Static<typeof TimeoutsSchema>): SmtpTimeouts {
  return { ...DEFAULT_TIMEOUTS, ...t };
}

/** TLS settings from the config (reads `caFile` once, at start-up). */
export async function tlsSettings(c: {
  readonly rejectUnauthorized: boolean;
  readonly servername?: string;
  readonly caFile?: string;
}): Promise<TlsSettings> {
  return {
    rejectUnauthorized: c.rejectUnauthorized,
    ...(c.servername === undefined ? {} : { servername: c.servername }),
    ...(c.caFile === undefined ? {} : { ca: await readFile(c.caFile) }),
  };
}
