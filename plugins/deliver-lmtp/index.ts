/**
 * Final delivery over LMTP (RFC 2033) to a mail store (Dovecot, Cyrus...):
 * TCP or a Unix socket; one result per recipient after the data.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import {
  ChunkingProperty,
  clientTimeouts,
  TimeoutsSchema,
  TlsCheckProperties,
  TlsModeSchema,
  tlsSettings,
} from '../outbound/client-schema.ts';
import type { Target } from '../outbound/connection.ts';
import { envelopeOf } from '../outbound/envelope.ts';
import { claims, domainMatcher } from '../outbound/routing.ts';
import { type SmtpClientOptions, sendMessage } from '../outbound/smtp-client.ts';

export const schema = Type.Object(
  {
    host: Type.Optional(
      Type.String({ minLength: 1, description: 'LMTP server name or address (with `port`).' }),
    ),
    port: Type.Integer({ minimum: 1, maximum: 65535, default: 24, description: 'LMTP server TCP port.' }),
    socket: Type.Optional(
      Type.String({ minLength: 1, description: 'Unix socket path of the LMTP server (instead of `host`).' }),
    ),
    domains: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description:
        'Recipient domains delivered here when the queue did not route the job: `example.com`, `*.example.com` or `*`. Empty: only jobs routed to this plugin.',
    }),
    lhloName: Type.Optional(
      Type.String({ minLength: 1, description: 'Name given in LHLO (default: the server host name).' }),
    ),
    tls: TlsModeSchema('none'),
    ...TlsCheckProperties,
    chunking: ChunkingProperty,
    timeouts: TimeoutsSchema,
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'deliver-lmtp',
  description: 'Delivers to a mail store over LMTP (TCP or Unix socket) with per-recipient results.',
  schema,
  async register(api, config) {
    if ((config.host === undefined) === (config.socket === undefined)) {
      throw new Error('deliver-lmtp needs exactly one of `host` or `socket`');
    }
    const target: Target =
      config.socket !== undefined
        ? { socketPath: config.socket }
        : { host: config.host as string, port: config.port };
    const options: SmtpClientOptions = {
      target,
      protocol: 'lmtp',
      heloName: config.lhloName ?? api.server.hostname,
      tls: config.tls,
      tlsSettings: await tlsSettings(config),
      timeouts: clientTimeouts(config.timeouts),
      chunking: config.chunking,
      mtaName: config.socket ?? (config.host as string),
    };
    const matches = domainMatcher(config.domains);
    api.hooks.deliver.tap((job) => {
      if (!claims(api.name, matches, job)) return undefined;
      return sendMessage({ ...options, log: job.log }, envelopeOf(job));
    });
  },
});
