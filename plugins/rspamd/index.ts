/**
 * Content scanning with rspamd: once the message arrived, POST it (streamed
 * from the spool) with its envelope to rspamd's `/checkv2`, record what
 * rspamd said as check `rspamd` (docs/policy.md), and turn rspamd's action
 * (`reject`, `soft reject`, `rewrite subject`, `add header`, `greylist`,
 * `no action`, `discard`, `quarantine`) into ours through the `actions` map.
 * Accepted spam is tagged with `X-Spam` and `X-Spamd-Result` header fields.
 * A timeout or an outage accepts (`failOpen`, the default) or answers 451.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import Type, { type Static } from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Message, Transaction } from '../../core/types.ts';
import {
  type Action,
  ActionSchema,
  allResults,
  applyAction,
  type CheckResult,
  type ResultValue,
  recordResult,
  validateActions,
} from '../policy/policy.ts';
import { checkV2, type RspamdAnswer, RspamdError, type RspamdSymbol } from './client.ts';
import { resultSymbols, spamdResultField } from './fields.ts';

/** What `rspamd` records. */
export interface RspamdResult extends CheckResult {
  /** rspamd's action (absent when rspamd did not answer). */
  readonly action?: string;
  readonly score?: number;
  readonly requiredScore?: number;
  readonly symbols?: readonly RspamdSymbol[];
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    rspamd: RspamdResult;
  }
}

const one = (name: string) =>
  Type.Optional({ ...ActionSchema, description: `What to do when rspamd says \`${name}\`.` });

const DEFAULT_ACTIONS = {
  reject: { action: 'reject' },
  'soft reject': { action: 'tempfail' },
  'rewrite subject': { action: 'tag' },
  'add header': { action: 'tag' },
  greylist: { action: 'tempfail', text: 'Greylisted, please try again later' },
  'no action': { action: 'accept' },
  discard: { action: 'quarantine' },
  quarantine: { action: 'quarantine' },
} satisfies Record<string, Action>;

export const schema = Type.Object(
  {
    url: Type.String({
      pattern: '^https?://[^\\s]+$',
      default: 'http://127.0.0.1:11333',
      description: 'Base URL of rspamd’s normal worker (or proxy); the plugin posts to `<url>/checkv2`.',
    }),
    timeout: Type.Integer({
      minimum: 100,
      default: 15000,
      description:
        'Milliseconds for the whole scan (sending the message and reading the answer). Keep it below the plugin’s hook timeout (`timeouts.hook`, 30 s), which would otherwise answer `451 4.3.0` first.',
    }),
    failOpen: Type.Boolean({
      default: true,
      description:
        'When rspamd times out, is down or answers nonsense: accept the message (logged, result `temperror`). `false`: refuse it for now with `451 4.7.1`.',
    }),
    actions: Type.Object(
      {
        reject: one('reject'),
        'soft reject': one('soft reject'),
        'rewrite subject': one('rewrite subject'),
        'add header': one('add header'),
        greylist: one('greylist'),
        'no action': one('no action'),
        discard: one('discard'),
        quarantine: one('quarantine'),
      },
      {
        additionalProperties: false,
        default: DEFAULT_ACTIONS,
        description:
          'Our action for each rspamd action, merged over the defaults: `reject` 550 5.7.1, `soft reject` and `greylist` 451 4.7.1, `add header` and `rewrite subject` tag, `discard` and `quarantine` quarantine, `no action` accepts. An action rspamd names that is not here is accepted (logged).',
      },
    ),
    headers: Type.Union([Type.Literal('spam'), Type.Literal('always'), Type.Literal('never')], {
      default: 'spam',
      description:
        'When to add `X-Spam: Yes` and `X-Spamd-Result` to an accepted message: `spam` (rspamd’s action is anything but `no action` and `greylist`), `always` (every scanned message; `X-Spam: No` when clean), `never`.',
    }),
    passResults: Type.Boolean({
      default: true,
      description:
        'Tell rspamd what our SPF, DKIM and DMARC checks found, as its own symbols (`R_SPF_ALLOW`, `R_DKIM_REJECT`, `DMARC_POLICY_REJECT`, ...) in the `Settings` request header, so they count in its score.',
    }),
    maxSize: Type.Integer({
      minimum: 1,
      default: 20 * 1024 * 1024,
      description: 'Octets above which a message is not scanned (recorded as `none`, accepted).',
    }),
    password: Type.Optional(
      Type.String({
        minLength: 1,
        writeOnly: true,
        description:
          'Sent as the `Password` request header, for an rspamd proxy or controller that asks for one.',
      }),
    ),
  },
  { additionalProperties: false },
);

export type RspamdConfig = Static<typeof schema>;

const REPLIES = {
  reject: reply(550, '5.7.1', 'Message refused as spam'),
  tempfail: reply(451, '4.7.1', 'Message deferred by the content filter, please try again later'),
};
const OUTAGE = reply(451, '4.7.1', 'Content filter unavailable, please try again later');

/** rspamd's actions as RFC 8601 result values, for the recorded result (and Authentication-Results). */
const RESULT_OF: Readonly<Record<string, ResultValue>> = {
  'no action': 'pass',
  greylist: 'neutral',
  'soft reject': 'neutral',
  'add header': 'softfail',
  'rewrite subject': 'softfail',
  reject: 'fail',
  discard: 'fail',
  quarantine: 'fail',
};

/** rspamd actions that say the message is spam (tagged with `X-Spam: Yes` when accepted). */
const SPAM_ACTIONS = new Set([
  'add header',
  'rewrite subject',
  'soft reject',
  'reject',
  'discard',
  'quarantine',
]);

/** Octets the message has as a stream: prepended fields and the data. */
function streamSize(message: Message): number {
  let size = message.size;
  for (const field of message.prepended) size += Buffer.byteLength(field, 'utf8') + 2;
  return size;
}

/**
 * A header value as raw UTF-8 octets (node writes header strings as latin1;
 * rspamd reads UTF-8), with anything that could end the field taken out.
 */
function octets(value: string): string {
  return Buffer.from(value.replace(/[\r\n\0]/g, ' '), 'utf8').toString('latin1');
}

function requestHeaders(tx: Transaction, config: RspamdConfig, hostname: string): OutgoingHttpHeaders {
  const s = tx.session;
  const headers: OutgoingHttpHeaders = {
    'content-type': 'message/rfc822',
    IP: s.remote.address,
    From: octets(tx.from.address?.address ?? '<>'),
    Rcpt: tx.recipients.map((r) => octets(r.address.address)),
    'Queue-Id': tx.id,
    'MTA-Name': octets(hostname),
  };
  if (s.helo) headers['Helo'] = octets(s.helo.domain);
  if (s.user !== undefined) headers['User'] = octets(s.user);
  if (s.tls) {
    headers['TLS-Version'] = s.tls.protocol;
    headers['TLS-Cipher'] = s.tls.cipher;
  }
  if (config.password !== undefined) headers['Password'] = octets(config.password);
  if (config.passResults) {
    const symbols = resultSymbols(allResults(tx));
    if (symbols.length > 0) headers['Settings'] = JSON.stringify({ symbols });
  }
  return headers;
}

export default definePlugin({
  name: 'rspamd',
  description:
    'Scans messages with rspamd (HTTP /checkv2) and maps its action to reject, tempfail, tag or quarantine.',
  schema,
  register(api, config) {
    const actions: Readonly<Record<string, Action | undefined>> = { ...DEFAULT_ACTIONS, ...config.actions };
    validateActions('rspamd', actions);
    const url = new URL(config.url);

    const scanned = (tx: Transaction, message: Message, answer: RspamdAnswer) => {
      const result: RspamdResult = {
        result: RESULT_OF[answer.action] ?? 'neutral',
        reason: `${answer.action}, score ${answer.score.toFixed(2)}/${answer.requiredScore.toFixed(2)}`,
        action: answer.action,
        score: answer.score,
        requiredScore: answer.requiredScore,
        symbols: answer.symbols,
      };
      recordResult(tx, 'rspamd', result);
      const action = actions[answer.action];
      const log = { action: answer.action, score: answer.score, required: answer.requiredScore };
      if (action === undefined) tx.log.warn(log, 'rspamd gave an action the config does not map: accepted');
      const verdict = applyAction(tx, 'rspamd', answer.action, action, REPLIES);
      if (verdict !== undefined) {
        tx.log.info({ ...log, reply: verdict.code }, 'rspamd: message refused');
        return verdict;
      }
      const spam = SPAM_ACTIONS.has(answer.action);
      if (config.headers === 'always' || (config.headers === 'spam' && spam)) {
        message.prepend([`X-Spam: ${spam ? 'Yes' : 'No'}`, spamdResultField(answer)]);
      }
      if (answer.action !== 'no action') tx.log.info(log, 'rspamd: message accepted');
      return undefined;
    };

    // After every check (DMARC records at LATE) so their results reach rspamd; before auth-results (LAST).
    api.hooks.message.tap(
      async (tx, message) => {
        const size = streamSize(message);
        if (size > config.maxSize) {
          recordResult(tx, 'rspamd', { result: 'none', reason: `not scanned: ${size} octets` });
          return undefined;
        }
        let answer: RspamdAnswer;
        try {
          answer = await checkV2({
            url,
            headers: requestHeaders(tx, config, api.server.hostname),
            size,
            body: () => message.stream(),
            timeout: config.timeout,
          });
        } catch (err) {
          const why = err instanceof RspamdError ? err.message : String(err);
          recordResult(tx, 'rspamd', { result: 'temperror', reason: why });
          if (config.failOpen) {
            tx.log.warn({ err: why }, 'rspamd scan failed: message accepted unscanned (failOpen)');
            return undefined;
          }
          tx.log.warn({ err: why }, 'rspamd scan failed: message refused for now');
          return OUTAGE;
        }
        return scanned(tx, message, answer);
      },
      { stage: Stage.RELAY },
    );
  },
});
