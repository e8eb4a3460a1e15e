/**
 * The files `mailframe init` writes: a project the user owns, for one role
 * (a public MX, a submission server for users, or a relay for internal hosts).
 */

export type Role = 'mx' | 'submission' | 'relay';

export interface TemplateInput {
  readonly name: string;
  readonly role: Role;
  /** Version ranges, taken from mailframe's own package.json so they never drift. */
  readonly versions: {
    readonly mailframe: string;
    readonly typebox: string;
    readonly typescript: string;
    readonly typesNode: string;
  };
  /** For `submission`: the users file with one user, made by the caller (it holds a hash). */
  readonly usersFile?: string;
}

const PLUGIN = 'local-policy';
const SCHEMA = './node_modules/mailframe/config.schema.json';

type Entry = Record<string, unknown>;

const extensions: Entry[] = [
  { $comment: 'Enhanced status codes (RFC 3463) in every reply.', plugin: 'enhanced-status-codes' },
  { $comment: 'Clients may send commands in groups (RFC 2920).', plugin: 'pipelining' },
  { $comment: 'Announce and enforce limits.maxMessageSize (RFC 1870).', plugin: 'size' },
  { plugin: '8bitmime' },
  { plugin: 'smtputf8' },
];

const queue: Entry = {
  $comment: 'The durable queue under dataDir: 250 is sent only once a message is safely on disk.',
  plugin: 'queue-fs',
};

function policy(config: Entry): Entry {
  return {
    $comment: `Your own plugin (plugins/${PLUGIN}/index.ts): edit it, or add more like it.`,
    plugin: `./plugins/${PLUGIN}/index.ts`,
    config,
  };
}

const smarthost: Entry = {
  $comment: [
    'Where outgoing mail goes: your provider or company relay. Until you set a real host,',
    'outgoing messages wait in the queue (see `npx mailframe queue list`).',
  ],
  plugin: 'relay-smarthost',
  config: { host: 'smtp.example.net', port: 587, tls: 'required' },
};

function config(role: Role): Entry {
  const common = {
    $schema: SCHEMA,
    $comment: [
      'mailframe.json: the whole server. Editors complete and check every key through $schema;',
      '`npm run check` validates it without starting. README.md explains each part.',
    ],
    hostname: role === 'submission' ? 'mail.example.com' : 'mx.example.com',
    dataDir: 'var',
  };
  switch (role) {
    case 'mx':
      return {
        ...common,
        listeners: [
          {
            $comment: 'To try it: loopback, port 2525. In production: host "0.0.0.0" (or "::") and port 25.',
            name: 'smtp',
            host: '127.0.0.1',
            port: 2525,
            role: 'mx',
          },
        ],
        limits: { maxMessageSize: 26214400, maxRecipients: 100, maxConnectionsPerIp: 20 },
        plugins: [
          ...extensions,
          policy({ blockedSenderDomains: [] }),
          {
            $comment: 'The domains you receive mail for; any other recipient gets 550 5.7.1 (no open relay).',
            plugin: 'rcpt-local',
            config: { domains: ['example.com'] },
          },
          {
            $comment: 'Stores accepted mail in Maildirs: var/mail/<domain>/<user>/Maildir.',
            plugin: 'deliver-maildir',
            config: { root: 'mail', domains: ['example.com'] },
          },
          queue,
        ],
      };
    case 'submission':
      return {
        ...common,
        listeners: [
          {
            $comment: [
              'Your users send mail here. To try it: loopback, port 2587. In production: host "0.0.0.0",',
              'port 587, and a second listener on 465 with "implicitTls": true.',
            ],
            name: 'submission',
            host: '127.0.0.1',
            port: 2587,
            role: 'submission',
          },
        ],
        limits: { maxMessageSize: 36700160, maxRecipients: 100, maxConnectionsPerIp: 20 },
        plugins: [
          ...extensions,
          {
            $comment: 'STARTTLS. Replace selfSigned with your "cert" and "key" files before real use.',
            plugin: 'tls',
            config: { selfSigned: true },
          },
          {
            $comment: 'AUTH (offered only over TLS); authenticated users may send to any address.',
            plugin: 'auth',
            config: { mechanisms: ['PLAIN', 'LOGIN'] },
          },
          {
            $comment: 'Users and their scrypt password hashes: `npx mailframe hash-password` makes one.',
            plugin: 'auth-users-file',
            config: { path: 'users.json' },
          },
          { $comment: 'RFC 6409 submission rules.', plugin: 'submission' },
          policy({ blockedSenderDomains: [] }),
          smarthost,
          queue,
        ],
      };
    case 'relay':
      return {
        ...common,
        listeners: [
          {
            $comment: 'Your own hosts and applications send here (loopback port 2525 to begin with).',
            name: 'smtp',
            host: '127.0.0.1',
            port: 2525,
            role: 'mx',
          },
        ],
        limits: { maxMessageSize: 36700160, maxRecipients: 100, maxConnectionsPerIp: 50 },
        plugins: [
          ...extensions,
          {
            ...policy({ relayClients: ['127.0.0.1', '::1'] }),
            $comment: [
              `Your own plugin (plugins/${PLUGIN}/index.ts): here it lets these client addresses send`,
              'to any recipient. Add the addresses of your hosts; everyone else gets 550 5.7.1.',
            ],
          },
          smarthost,
          queue,
        ],
      };
  }
}

const ROLE_TEXT: Record<Role, string> = {
  mx: 'a public MX: it receives mail for your domains from the Internet and stores it in Maildirs.',
  submission:
    'a submission server: your users authenticate (AUTH over TLS) and send mail, which goes out through a smarthost.',
  relay:
    'a relay for your own hosts and applications: mail from listed client addresses goes out through a smarthost.',
};

function packageJson(input: TemplateInput): string {
  const pkg = {
    name: input.name,
    version: '0.1.0',
    private: true,
    type: 'module',
    engines: { node: '>=22.18' },
    scripts: {
      start: 'mailframe start',
      check: 'mailframe check-config',
      test: 'node --test',
      typecheck: 'tsc --noEmit',
    },
    dependencies: { mailframe: input.versions.mailframe, typebox: input.versions.typebox },
    devDependencies: { '@types/node': input.versions.typesNode, typescript: input.versions.typescript },
  };
  return `${JSON.stringify(pkg, null, 2)}\n`;
}

const TSCONFIG = `${JSON.stringify(
  {
    compilerOptions: {
      target: 'es2024',
      module: 'nodenext',
      moduleResolution: 'nodenext',
      types: ['node'],
      strict: true,
      exactOptionalPropertyTypes: true,
      noUncheckedIndexedAccess: true,
      verbatimModuleSyntax: true,
      erasableSyntaxOnly: true,
      allowImportingTsExtensions: true,
      skipLibCheck: true,
      noEmit: true,
    },
    include: ['plugins', 'test'],
  },
  null,
  2,
)}\n`;

const PLUGIN_TS = `/**
 * Your plugin. Node runs this TypeScript file as it is (no build step): the
 * config names it by path, "./plugins/${PLUGIN}/index.ts".
 *
 * A check that refuses MAIL FROM at listed domains, and a rule that lets
 * listed client addresses send to any recipient. Hooks you can tap, with their
 * arguments: node_modules/mailframe/README.md and the docs it links to.
 */
import { definePlugin, Replies, reply, Stage } from 'mailframe';
import Type from 'typebox';

export const schema = Type.Object(
  {
    blockedSenderDomains: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'MAIL FROM at these domains is refused with 550 5.7.1.',
    }),
    relayClients: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'Client IP addresses that may send to any recipient.',
    }),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: '${PLUGIN}',
  description: 'Refuses listed sender domains; lets listed client addresses relay.',
  schema,
  register(api, config) {
    const blocked = new Set(config.blockedSenderDomains.map((d) => d.toLowerCase()));
    const relayClients = new Set(config.relayClients);

    api.hooks.mail.tap(
      (_tx, from) => {
        const domain = from.address?.asciiDomain;
        return domain !== undefined && blocked.has(domain)
          ? reply(550, '5.7.1', 'Sender domain refused')
          : undefined;
      },
      { stage: Stage.EARLY },
    );

    api.hooks.rcpt.tap((tx) => (relayClients.has(tx.session.remote.address) ? Replies.recipientOk : undefined), {
      stage: Stage.LATE,
    });
  },
});
`;

const PLUGIN_TEST = `/** The plugin over a real socket: mailframe/testkit starts a server on 127.0.0.1 with a free port. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startTestServer } from 'mailframe/testkit';
import localPolicy from './index.ts';

describe('${PLUGIN}', () => {
  it('refuses a listed sender domain with 550 5.7.1', async (t) => {
    const server = await startTestServer({ plugins: [[localPolicy, { blockedSenderDomains: ['spam.example'] }]] });
    t.after(() => server.close());
    const client = await server.connect();
    t.after(() => client.close());
    await client.expect('EHLO client.example', 250);
    await client.expect('MAIL FROM:<someone@spam.example>', 550, '5.7.1');
    await client.expect('MAIL FROM:<someone@good.example>', 250);
  });

  it('lets a listed client address send to any recipient', async (t) => {
    const server = await startTestServer({ plugins: [[localPolicy, { relayClients: ['127.0.0.1'] }]] });
    t.after(() => server.close());
    const client = await server.connect();
    t.after(() => client.close());
    await client.expect('EHLO client.example', 250);
    await client.expect('MAIL FROM:<app@client.example>', 250);
    await client.expect('RCPT TO:<anyone@elsewhere.example>', 250);
    await client.expect('DATA', 354);
    assert.equal((await client.sendData('Subject: hello\\r\\n\\r\\nhi')).code, 250);
    const [message] = await server.waitForMessages(1);
    assert.deepEqual(message?.recipients, ['anyone@elsewhere.example']);
  });
});
`;

const CONFIG_TEST = `/** mailframe.json, as \`npm start\` runs it: every setting validates, every plugin loads, it greets. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MailServer } from 'mailframe';
import { connectClient } from 'mailframe/testkit';

const projectDir = fileURLToPath(new URL('..', import.meta.url));

it('mailframe.json starts a server that greets', async (t) => {
  const config = JSON.parse(readFileSync(join(projectDir, 'mailframe.json'), 'utf8'));
  const dataDir = await mkdtemp(join(tmpdir(), 'mailframe-project-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  // The same config on free ports, with its state in a temporary directory.
  const listeners = config.listeners.map((l: object) => ({ ...l, port: 0 }));
  const server = await MailServer.create({ config: { ...config, dataDir, listeners }, baseDir: projectDir });
  t.after(() => server.close(0));
  const [first] = await server.listen();
  assert.ok(first);
  const client = await connectClient(first.port, '127.0.0.1');
  t.after(() => client.close());
  assert.equal(client.greeting?.code, 220);
  await client.expect('EHLO client.example', 250);
});
`;

function readme(input: TemplateInput): string {
  const port = input.role === 'submission' ? 2587 : 2525;
  const users =
    input.role === 'submission'
      ? `
- \`users.json\`: the users who may send, with scrypt password hashes. \`mailframe init\`
  made one user, \`alice\`, and printed the password once. Add users with
  \`npx mailframe hash-password\` (it reads the password from stdin and prints the hash).`
      : '';
  return `# ${input.name}

A mail server built with [mailframe](https://www.npmjs.com/package/mailframe): ${ROLE_TEXT[input.role]}

\`\`\`sh
npm install
npm start      # SMTP on 127.0.0.1:${port}
npm test       # your plugin and your config, over real sockets
npm run check  # validate mailframe.json without starting
\`\`\`

Node.js 22.18 or newer runs everything here as it is, TypeScript included (no build step).

## What is here

- \`mailframe.json\`: the server: listeners, limits, and the plugins to load, in order. JSON has
  no comments, so each part carries a \`"$comment"\` (the server ignores those keys). Editors
  complete and check every key through \`"$schema"\`. The dataDir (\`var/\`) holds the queue${input.role === 'mx' ? ' and the Maildirs' : ''}.
- \`plugins/${PLUGIN}/index.ts\`: your plugin, loaded by path. Its settings are a TypeBox schema:
  validated at start-up, typed in \`register\`, and wrong keys are refused with their JSON pointer.
- \`plugins/${PLUGIN}/index.test.ts\`: its tests with \`mailframe/testkit\` (a real server on a free
  port and a scripted SMTP client), run by \`node --test\`.
- \`test/config.test.ts\`: starts \`mailframe.json\` itself on free ports, so \`npm test\` catches a
  config that would not start.${users}

## Going further

- A bundled plugin's settings: \`npx mailframe check-config\` names every mistake; the schema
  behind the completions is \`node_modules/mailframe/config.schema.json\`.
- Completion for your own plugins' settings too: \`npx mailframe schema\` writes
  \`mailframe.schema.json\` (mailframe's schema plus every plugin your config names); point
  \`"$schema"\` at \`./mailframe.schema.json\` and run it again when you add plugins.
- More plugins: add a folder under \`plugins/\` and an entry in \`mailframe.json\`, or install a
  published one (\`npm install mailframe-plugin-...\`) and name it by its package name.
- Operations: \`npx mailframe queue list\` shows the queue; SIGTERM stops the server gracefully.
`;
}

/** Every file of the project, by path relative to its directory. */
export function projectFiles(input: TemplateInput): Map<string, string> {
  const files = new Map<string, string>([
    ['package.json', packageJson(input)],
    ['mailframe.json', `${JSON.stringify(config(input.role), null, 2)}\n`],
    ['README.md', readme(input)],
    ['tsconfig.json', TSCONFIG],
    ['.gitignore', 'node_modules/\nvar/\n'],
    [`plugins/${PLUGIN}/index.ts`, PLUGIN_TS],
    [`plugins/${PLUGIN}/index.test.ts`, PLUGIN_TEST],
    ['test/config.test.ts', CONFIG_TEST],
  ]);
  if (input.usersFile !== undefined) files.set('users.json', input.usersFile);
  return files;
}
