/**
 * Relay every message (or those for some domains) through one smarthost over
 * SMTP: STARTTLS, AUTH, and the extensions the outbound client speaks.
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
import { envelopeOf } from '../outbound/envelope.ts';
import { claims, domainMatcher } from '../outbound/routing.ts';
import { type SmtpClientOptions, sendMessage } from '../outbound/smtp-client.ts';

export const schema = Type.Object(
  {
    host: Type.String({ minLength: 1, description: 'Smarthost name or address.' }),
    port: Type.Integer({
      minimum: 1,
      maximum: 65535,
      default: 25,
      description:
        'Smarthost port: 25 (relay), 587 (submission, usually with `auth`), 465 (with `tls: implicit`).',
    }),
    tls: TlsModeSchema('opportunistic'),
    ...TlsCheckProperties,
    auth: Type.Optional(
      Type.Object(
        {
          user: Type.String({ minLength: 1, description: 'User name for AUTH PLAIN or LOGIN.' }),
          pass: Type.Optional(Type.String({ writeOnly: true, description: 'Password (prefer `passEnv`).' })),
          passEnv: Type.Optional(
            Type.String({ minLength: 1, description: 'Environment variable holding the password.' }),
          ),
        },
        { additionalProperties: false, description: 'Credentials (RFC 4954); sent only over TLS.' },
      ),
    ),
    allowInsecureAuth: Type.Boolean({
      default: false,
      description:
        'Send credentials over a connection without TLS (only for a smarthost on a trusted network).',
    }),
    domains: Type.Array(Type.String({ minLength: 1 }), {
      default: ['*'],
      description:
        'Recipient domains to relay when the queue did not route the job: `example.com`, `*.example.com` (subdomains) or `*` (all).',
    }),
    heloName: Type.Optional(
      Type.String({ minLength: 1, description: 'Name given in EHLO (default: the server host name).' }),
    ),
    chunking: ChunkingProperty,
    timeouts: TimeoutsSchema,
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'relay-smarthost',
  description: 'Delivers outbound mail through a smarthost over SMTP (STARTTLS, AUTH).',
  schema,
  async register(api, config) {
    let auth: SmtpClientOptions['auth'];
    if (config.auth) {
      const pass = config.auth.passEnv !== undefined ? process.env[config.auth.passEnv] : config.auth.pass;
      if (pass === undefined) {
        throw new Error(
          config.auth.passEnv !== undefined
            ? `environment variable ${config.auth.passEnv} (auth.passEnv) is not set`
            : 'auth needs `pass` or `passEnv`',
        );
      }
      auth = { user: config.auth.user, pass };
    }
    const options: SmtpClientOptions = {
      target: { host: config.host, port: config.port },
      heloName: config.heloName ?? api.server.hostname,
      tls: config.tls,
      tlsSettings: await tlsSettings(config),
      ...(auth ? { auth } : {}),
      allowInsecureAuth: config.allowInsecureAuth,
      timeouts: clientTimeouts(config.timeouts),
      chunking: config.chunking,
      mtaName: config.host,
    };
    const matches = domainMatcher(config.domains);
    api.hooks.deliver.tap((job) => {
      if (!claims(api.name, matches, job)) return undefined;
      return sendMessage({ ...options, log: job.log }, envelopeOf(job));
    });
  },
});
