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
    port: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 65535,
        description: 'TCP port (0 picks a free one). Each listener has a `port` or a `path`.',
      }),
    ),
    path: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Unix socket to listen on instead of a TCP port, relative to the config file; a stale socket file left there by an earlier run (nothing answers on it) is replaced; a live one makes listening fail.',
      }),
    ),
    pathMode: Type.Optional(
      Type.String({
        pattern: '^[0-7]{3,4}$',
        description:
          'Permissions of the `path` socket file in octal, e.g. `"0660"` so that an MTA in the same group can connect (default: from the umask).',
      }),
    ),
    protocol: Type.Union([Type.Literal('smtp'), Type.Literal('lmtp')], {
      default: 'smtp',
      description:
        '`lmtp`: speak LMTP (RFC 2033) for final delivery behind another MTA: LHLO instead of EHLO/HELO, one reply per recipient after the message. Never on port 25.',
    }),
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
  {
    additionalProperties: false,
    // A TCP port or a Unix socket path, not both (editors check this too).
    oneOf: [
      { properties: { port: {} }, required: ['port'] },
      { properties: { path: {} }, required: ['path'] },
    ],
  },
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
    recipientOvershoot: Type.Integer({
      minimum: 0,
      default: 1000,
      description:
        'RCPTs past `maxRecipients` per session answered 452 4.5.3 without counting toward `maxErrors` (Postfix smtpd_recipient_overshoot_limit); later ones count.',
    }),
    maxMessageSize: Type.Integer({
      minimum: 1024,
      default: 52428800,
      description: 'Octets of message data; larger messages are read to the end and refused with 552 5.3.4.',
    }),
    maxHeaderSize: Type.Integer({
      minimum: 1024,
      default: 102400,
      description:
        'Octets of the header section, up to and including the empty line after it; a larger one is read to the end and refused with 552 5.3.4.',
    }),
    maxHeaderFieldLength: Type.Integer({
      minimum: 1000,
      default: 65536,
      description:
        'Octets of one header field, its continuation lines and line endings included; a longer one is read to the end and refused with 554 5.6.0.',
    }),
    maxReceivedHeaders: Type.Integer({
      minimum: 1,
      default: 100,
      description:
        'Received header fields a message may carry as it arrives (our own is not counted); more means a mail loop (RFC 5321 6.3: at least 100) and the message is refused with 554 5.4.6 after the data.',
    }),
    maxLineLength: Type.Integer({
      minimum: 512,
      default: 512,
      description:
        'Octets of a command line including CRLF (RFC 5321 4.5.3.1.4); an extension raises it only for its own command or for MAIL/RCPT lines carrying its parameters.',
    }),
  },
  { additionalProperties: false, default: {}, description: 'Resource limits.' },
);

export const TimeoutsSchema = Type.Object(
  {
    command: ms(
      'Waiting for a command (RFC 5321 4.5.3.2.7 server timeout: 5 minutes): the whole line must arrive within it, counted from the last reply; octets trickling in do not extend it.',
      300000,
    ),
    data: ms(
      'Waiting for message data (RFC 5321 4.5.3.2.7: at least 5 minutes): the longest silence allowed in DATA or a BDAT chunk, and the cap on what `minDataRate` credits.',
      300000,
    ),
    hook: ms('A plugin tap on an inbound hook before it counts as failed (451 4.3.0).', 30000),
    delivery: ms('A plugin tap on the `deliver` hook.', 600000),
    pluginStart: ms(
      'A plugin `register` before start-up fails; in a config reload, also its start callbacks (the reload is refused).',
      10000,
    ),
    shutdownGrace: ms('On SIGTERM, how long open transactions may finish before 421.', 30000),
    greetingDelay: ms('Wait before the greeting (0: none); a client talking first is an early talker.', 0),
    minDataRate: Type.Integer({
      minimum: 0,
      default: 500,
      description:
        'Octets per second message data (DATA, BDAT) must average: each octet adds 1/minDataRate s to the data deadline, never beyond `data` from now, so a trickling client times out (Postfix smtpd_min_data_rate). 0: any octet restarts the data timeout.',
    }),
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
    commandBareLineFeed: Type.Union([Type.Literal('reject'), Type.Literal('accept')], {
      default: 'reject',
      description:
        'A command line ending in a bare LF instead of CRLF (RFC 5321 2.3.8, 4.1.1): `reject` answers 500 5.5.2 and ignores the line (Postfix smtpd_forbid_bare_newline), `accept` takes it as a line.',
    }),
    rejectEarlyTalkers: Type.Boolean({
      default: true,
      description: 'Refuse clients that send before the greeting (only with `timeouts.greetingDelay` > 0).',
    }),
  },
  { additionalProperties: false, default: {}, description: 'Protocol policy.' },
);

export const DnsSchema = Type.Object(
  {
    servers: Type.Optional(
      Type.Array(
        Type.String({
          minLength: 1,
          description: 'An address with an optional port: `"192.0.2.53"`, `"127.0.0.1:5353"`, `"[::1]:53"`.',
        }),
        {
          minItems: 1,
          description:
            "Recursive name servers to ask, in order (failover); a bare address means port 53. Default: the system's (`/etc/resolv.conf`), read at start.",
        },
      ),
    ),
    timeout: Type.Integer({
      minimum: 1,
      default: 5000,
      description: 'Milliseconds to wait for one server to answer one query before asking the next.',
    }),
    attempts: Type.Integer({
      minimum: 1,
      default: 2,
      description:
        'Rounds over `servers` before a lookup gives up with a temporary error (a server that answered SERVFAIL or REFUSED is not asked again in the same lookup).',
    }),
    cacheSize: Type.Integer({
      minimum: 0,
      default: 10000,
      description: 'Answers kept in the cache (least recently used dropped first); 0 turns the cache off.',
    }),
    minTtl: Type.Integer({
      minimum: 0,
      default: 0,
      description: 'Seconds an answer is cached at least, whatever its TTL says.',
    }),
    maxTtl: Type.Integer({
      minimum: 0,
      default: 86400,
      description: 'Seconds an answer is cached at most, whatever its TTL says.',
    }),
    negativeTtl: Type.Integer({
      minimum: 0,
      default: 900,
      description:
        "Seconds a negative answer (no such name, no such record) is cached at most; its own time is the SOA's TTL or MINIMUM, whichever is less (RFC 2308 5); without an SOA it is not cached.",
    }),
    errorTtl: Type.Integer({
      minimum: 0,
      maximum: 300,
      default: 5,
      description:
        'Seconds a failed lookup (SERVFAIL, REFUSED, timeout) is remembered, so a burst of lookups for a broken name does not wait out the timeouts again; 0: not at all (RFC 2308 7: at most 300).',
    }),
    trustAd: Type.Boolean({
      default: false,
      description:
        'Believe the AD bit (DNSSEC-validated) in answers: only when `servers` are validating resolvers you run, on a path you trust (e.g. on this host). Also sets the DO bit in queries.',
    }),
  },
  { additionalProperties: false, default: {}, description: 'The DNS resolver every plugin uses.' },
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
    dns: DnsSchema,
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
export type DnsConfig = Static<typeof DnsSchema>;
export type ListenerConfig = Static<typeof ListenerSchema>;
export type PluginEntry = Static<typeof PluginEntrySchema>;
