/**
 * The core's part of `mailframe.json`. One TypeBox object is the JSON Schema
 * (ajv validates with it), the TypeScript type and the source of the docs.
 */
import Type, { type Static } from 'typebox';

const ms = (description: string, dflt: number) => Type.Integer({ minimum: 0, default: dflt, description });

/** JSON has no comments: a `$comment` key holds one, and the server ignores it. */
const CommentSchema = Type.Optional(
  Type.Union([Type.String(), Type.Array(Type.String())], {
    description: 'A comment for people reading the file (one string or one per line); ignored.',
  }),
);

export const ListenerSchema = Type.Object(
  {
    $comment: CommentSchema,
    name: Type.String({
      minLength: 1,
      description: 'Name used in logs and to scope plugins (`listeners` on a plugin entry).',
    }),
    host: Type.String({ default: '127.0.0.1', description: 'Address to bind; `::` or `0.0.0.0` for all.' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, description: 'TCP port (0 picks a free one).' }),
    role: Type.Union([Type.Literal('mx'), Type.Literal('submission')], {
      default: 'mx',
      description: 'What the listener is for; plugins read it (e.g. AUTH is required on `submission`).',
    }),
    implicitTls: Type.Boolean({
      default: false,
      description:
        'TLS from the first byte (port 465, RFC 8314). Needs a TLS plugin that provides certificates.',
    }),
    proxyProtocol: Type.Boolean({
      default: false,
      description:
        'Expect a HAProxy PROXY v1/v2 header on every connection (behind a load balancer); hooks see the real client.',
    }),
    trustedProxies: Type.Array(Type.String(), {
      default: ['127.0.0.1', '::1'],
      description: 'Addresses or CIDRs allowed to send a PROXY header; other peers are disconnected.',
    }),
  },
  { additionalProperties: false },
);

export const LimitsSchema = Type.Object(
  {
    maxConnections: Type.Integer({
      minimum: 1,
      default: 10000,
      description: 'Open connections, all listeners.',
    }),
    maxConnectionsPerIp: Type.Integer({
      minimum: 1,
      default: 50,
      description: 'Open connections from one address.',
    }),
    maxErrors: Type.Integer({
      minimum: 1,
      default: 10,
      description: 'Error replies (4xx/5xx) to one session before it is closed with 421 4.7.0.',
    }),
    maxRecipients: Type.Integer({
      minimum: 1,
      default: 100,
      description:
        'Recipients per transaction (RFC 5321 4.5.3.1.8 requires at least 100); more get 452 4.5.3.',
    }),
    maxMessageSize: Type.Integer({
      minimum: 1024,
      default: 52428800,
      description: 'Octets of message data; larger messages are read to the end and refused with 552 5.3.4.',
    }),
    maxLineLength: Type.Integer({
      minimum: 512,
      default: 512,
      description: 'Octets of a command line including CRLF (RFC 5321 4.5.3.1.4); plugins may add to it.',
    }),
  },
  { additionalProperties: false, default: {}, description: 'Resource limits.' },
);

export const TimeoutsSchema = Type.Object(
  {
    command: ms('Waiting for a command (RFC 5321 4.5.3.2.7 server timeout: 5 minutes).', 300000),
    data: ms('Waiting for the next block of message data (RFC 5321 4.5.3.2.7: at least 5 minutes).', 300000),
    hook: ms('A plugin tap on an inbound hook before it counts as failed (451 4.3.0).', 30000),
    delivery: ms('A plugin tap on the `deliver` hook.', 600000),
    pluginStart: ms('A plugin `register` before start-up fails.', 10000),
    shutdownGrace: ms('On SIGTERM, how long open transactions may finish before 421.', 30000),
    greetingDelay: ms('Wait before the greeting (0: none); a client talking first is an early talker.', 0),
  },
  { additionalProperties: false, default: {}, description: 'Timeouts in milliseconds.' },
);

export const SmtpSchema = Type.Object(
  {
    banner: Type.String({
      default: 'ESMTP mailframe',
      description: 'Text after the host name in the 220 greeting.',
    }),
    bareLineEndings: Type.Union([Type.Literal('normalize'), Type.Literal('reject')], {
      default: 'normalize',
      description:
        'Bare CR or LF in message data: `normalize` stores them as CRLF, `reject` answers 550 5.5.2 after the data.',
    }),
    rejectEarlyTalkers: Type.Boolean({
      default: true,
      description: 'Refuse clients that send before the greeting (only with `timeouts.greetingDelay` > 0).',
    }),
  },
  { additionalProperties: false, default: {}, description: 'Protocol policy.' },
);

export const PluginEntrySchema = Type.Object(
  {
    $comment: CommentSchema,
    plugin: Type.String({
      minLength: 1,
      description: 'A bundled plugin name, an npm package, or a path to a file (starting with `./` or `/`).',
    }),
    id: Type.Optional(
      Type.String({ minLength: 1, description: 'Instance name, when the same plugin is loaded twice.' }),
    ),
    config: Type.Optional(
      Type.Object({}, { additionalProperties: true, description: "The plugin's own settings." }),
    ),
    listeners: Type.Optional(
      Type.Array(Type.String(), { description: 'Only run this plugin on sessions of these listeners.' }),
    ),
    timeout: Type.Optional(
      Type.Integer({ minimum: 1, description: 'Per-tap timeout in ms for this plugin.' }),
    ),
  },
  { additionalProperties: false },
);

export const CoreConfigSchema = Type.Object(
  {
    $schema: Type.Optional(Type.String()),
    $comment: CommentSchema,
    hostname: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'Name in the greeting and Received headers (default: the OS host name).',
      }),
    ),
    dataDir: Type.String({
      default: './var',
      description: 'Where the server keeps its state (spool, queue), relative to the config file.',
    }),
    listeners: Type.Array(ListenerSchema, {
      description: 'TCP listeners to open.',
      minItems: 1,
      default: [{ name: 'smtp', host: '127.0.0.1', port: 2525 }],
    }),
    limits: LimitsSchema,
    timeouts: TimeoutsSchema,
    smtp: SmtpSchema,
    log: Type.Object(
      {
        level: Type.Union(
          ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
          { default: 'info', description: 'Minimum level logged.' },
        ),
        pretty: Type.Optional(
          Type.Boolean({ description: 'Human-readable logs (default: when stdout is a TTY).' }),
        ),
      },
      { additionalProperties: false, default: {}, description: 'Logging.' },
    ),
    plugins: Type.Array(PluginEntrySchema, { default: [], description: 'Plugins to load, in order.' }),
  },
  { additionalProperties: false },
);

export type CoreConfig = Static<typeof CoreConfigSchema>;
export type ListenerConfig = Static<typeof ListenerSchema>;
export type PluginEntry = Static<typeof PluginEntrySchema>;
