/** deliver-mx's settings: one TypeBox schema for validation, types and docs. */
import Type, { type Static } from 'typebox';
import { ChunkingProperty, TimeoutsSchema } from '../outbound/client-schema.ts';

const LEVELS =
  'DANE (when the MX host publishes usable TLSA records under DNSSEC) and then MTA-STS (when the domain publishes an enforce or testing policy) take precedence; otherwise: `may`: STARTTLS when offered, any certificate; `encrypt`: STARTTLS or defer (4.7.4), any certificate; `verify`: STARTTLS with a certificate that verifies and names the MX host, or defer. `none`: no STARTTLS, and neither DANE nor MTA-STS is consulted. `dane`: DANE when it applies, else `may` (MTA-STS not consulted); `dane-only`: DANE or defer; `mta-sts`: MTA-STS when published, else `may` (DANE not consulted).';
const Level = (options: { default?: string; description: string }) =>
  Type.Union(
    [
      Type.Literal('none'),
      Type.Literal('may'),
      Type.Literal('encrypt'),
      Type.Literal('verify'),
      Type.Literal('dane'),
      Type.Literal('dane-only'),
      Type.Literal('mta-sts'),
    ],
    options,
  );

export const schema = Type.Object(
  {
    domains: Type.Array(Type.String({ minLength: 1 }), {
      default: ['*'],
      description:
        'Recipient domains delivered by MX when the queue did not route the job: `example.com`, `*.example.com` or `*` (every domain). Jobs routed to this plugin are always delivered.',
    }),
    port: Type.Integer({
      minimum: 1,
      maximum: 65535,
      default: 25,
      description: 'Port of the remote mail exchangers (25; another only for tests and benchmarks).',
    }),
    heloName: Type.Optional(
      Type.String({ minLength: 1, description: 'Name given in EHLO (default: the server host name).' }),
    ),
    sources: Type.Array(
      Type.Object(
        {
          address: Type.String({ minLength: 1, description: 'Local IP address to connect from.' }),
          heloName: Type.Optional(
            Type.String({ minLength: 1, description: 'EHLO name for connections from this address.' }),
          ),
        },
        { additionalProperties: false },
      ),
      {
        default: [],
        description:
          'Outbound IP addresses (and their EHLO names), used in turn for new connections of the same address family. Empty: the system picks.',
      },
    ),
    localNames: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description:
        'More names of this host besides `hostname`: an MX naming one of them, and every less preferred MX, is not tried (RFC 5321 5.1); nothing left is `5.4.6`.',
    }),
    addressLiterals: Type.Boolean({
      default: false,
      description: 'Deliver to address literals (`user@[192.0.2.1]`); off: such recipients fail with 5.1.2.',
    }),
    addressFamilies: Type.Array(Type.Union([Type.Literal('ipv4'), Type.Literal('ipv6')]), {
      minItems: 1,
      maxItems: 2,
      uniqueItems: true,
      default: ['ipv4', 'ipv6'],
      description: 'Address families of each MX host to try, in this order (leave one out to never use it).',
    }),
    maxRecipients: Type.Integer({
      minimum: 1,
      default: 100,
      description:
        'Recipients per transaction (fewer when the remote announces LIMITS RCPTMAX); more go in further transactions.',
    }),
    perDestination: Type.Integer({
      minimum: 1,
      default: 20,
      description: 'Connections at most to one destination (busy and idle), as Postfix.',
    }),
    concurrency: Type.Integer({
      minimum: 1,
      default: 100,
      description:
        'Connections in use at most overall (delivering, or being opened); jobs beyond it wait. Idle connections are bounded by `maxIdle`.',
    }),
    initialConcurrency: Type.Integer({
      minimum: 1,
      default: 5,
      description:
        'Slow start: connections a destination starts with; each successful connection allows one more (up to `perDestination`), each failed one one fewer.',
    }),
    maxMessagesPerConnection: Type.Integer({
      minimum: 1,
      default: 1000,
      description:
        'Transactions one connection carries before it is closed (fewer when the remote announces LIMITS MAILMAX).',
    }),
    idleTimeout: Type.Integer({
      minimum: 0,
      default: 2000,
      description:
        "Milliseconds an idle connection waits for the next message to its destination (RSET checks it first), as in Postfix's connection cache. 0: close after each job.",
    }),
    maxIdle: Type.Integer({
      minimum: 0,
      default: 1000,
      description:
        'Idle connections kept at most, all destinations together; past it the longest idle is closed. 0: close after each job.',
    }),
    failureThreshold: Type.Integer({
      minimum: 1,
      default: 5,
      description:
        'Connection failures in a row (every exchanger tried) after which a destination counts as dead for `backoff`.',
    }),
    backoff: Type.Integer({
      minimum: 1,
      default: 300_000,
      description:
        'Milliseconds a dead destination is not connected to: its jobs are deferred (4.4.1) at once; then one connection probes it.',
    }),
    rateDelay: Type.Integer({
      minimum: 0,
      default: 0,
      description: 'Least milliseconds between two transactions to one destination (0: no rate limit).',
    }),
    tlsPolicy: Level({
      default: 'may',
      description: `The TLS policy of destinations not in \`tlsPolicies\`. ${LEVELS}`,
    }),
    tlsPolicies: Type.Record(Type.String({ minLength: 1 }), Level({ description: 'A TLS policy level.' }), {
      default: {},
      description:
        'TLS policy per destination: `{ "example.com": "verify", "*.example.net": "encrypt" }`; the first matching entry wins, others get `tlsPolicy`.',
    }),
    caFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PEM file of CA certificates to trust for `verify` and MTA-STS MX certificates instead of the system store.',
      }),
    ),
    dane: Type.Boolean({
      default: true,
      description:
        'DANE (RFC 7672): look up TLSA records of MX hosts whose MX lookup was DNSSEC-authenticated. Takes effect only with a validating resolver trusted by `dns.trustAd`.',
    }),
    mtaSts: Type.Object(
      {
        enabled: Type.Boolean({
          default: true,
          description:
            'MTA-STS (RFC 8461): look up `_mta-sts.<domain>` and apply the published policy; policies are cached for their `max_age` under the data directory.',
        }),
        caFile: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              'PEM file of more CA certificates to trust for policy hosts (`mta-sts.<domain>`), besides the default ones.',
          }),
        ),
        timeout: Type.Integer({
          minimum: 1,
          default: 60_000,
          description: 'Milliseconds a policy fetch may take in all (RFC 8461 3.3 suggests a minute).',
        }),
        port: Type.Integer({
          minimum: 1,
          maximum: 65535,
          default: 443,
          description: 'HTTPS port of policy hosts: 443; another only for tests.',
        }),
      },
      { additionalProperties: false, default: {}, description: 'MTA-STS policy discovery.' },
    ),
    chunking: ChunkingProperty,
    timeouts: TimeoutsSchema,
  },
  { additionalProperties: false },
);

export type DeliverMxConfig = Static<typeof schema>;
