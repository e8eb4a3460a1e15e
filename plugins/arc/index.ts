/**
 * ARC (RFC 8617): verifies the Authenticated Received Chain of an arriving
 * message in the `message` hook, reading the spooled message as a stream, and
 * records the chain's result (check `arc`, see docs/policy.md). When a sealing
 * key is configured, it adds the next ARC set (ARC-Seal,
 * ARC-Message-Signature, ARC-Authentication-Results) on top of the message
 * once every check has reported, so that a forwarded message carries our
 * results. The cryptography is mailauth's (`mailauth/lib/arc`); its DKIM pass
 * is skipped (DKIM-Signature fields are dkim-verify's, whose results are on
 * the transaction).
 */
import { createRequire } from 'node:module';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ARCData } from 'mailauth';
import { arc, createSeal } from 'mailauth/lib/arc/index.js';
import type { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { Transaction } from '../../core/types.ts';
import { registeredResults, resinfo } from '../auth-results/format.ts';
import type {} from '../auth-results/index.ts';
import { readHeaderSection } from '../dkim-sign/header.ts';
import { loadSigningKey } from '../dkim-sign/keys.ts';
import { mailauthResolver } from '../policy/mailauth-resolver.ts';
import { messageHeader } from '../policy/message-header.ts';
import {
  actionsSchema,
  allResults,
  type CheckResult,
  type DefaultReplies,
  decide,
  recordResult,
  resultsOf,
  validateActions,
} from '../policy/policy.ts';

/** What `arc` records (check `arc`, one result per message). */
export interface ArcResult extends CheckResult {
  /** `pass`: the chain validates; `fail`: it does not; `none`: the message has no ARC set. */
  readonly result: 'pass' | 'fail' | 'none';
  /** The highest instance (`i=`) on the message: the number of ARC sets; 0 for `none`. */
  readonly instance: number;
  /** The sealing domains (`d=` of each ARC-Seal), instance 1 first. */
  readonly sealers: readonly string[];
}

declare module '../policy/policy.ts' {
  interface PolicyChecks {
    arc: ArcResult;
  }
}

const Seal = Type.Object(
  {
    domain: Type.String({
      minLength: 1,
      description: 'The sealing domain (`d=` of ARC-Seal and ARC-Message-Signature).',
    }),
    selector: Type.String({
      minLength: 1,
      description: 'The selector (`s=`); the public key is at `<selector>._domainkey.<domain>`.',
    }),
    keyFile: Type.String({
      minLength: 1,
      description:
        'PEM private key (PKCS#8 or PKCS#1): RSA (1024 bits or more) or Ed25519. Read once at start.',
    }),
    algorithm: Type.Optional(
      Type.Union([Type.Literal('rsa-sha256'), Type.Literal('ed25519-sha256')], {
        description: 'Signing algorithm. Default: the one the key type gives.',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Seal every message passing through with the next ARC set (for a forwarder or mailing list). Not set: verify only.',
  },
);

export const schema = Type.Object(
  {
    actions: actionsSchema('ARC', {}),
    minKeyBits: Type.Integer({
      minimum: 512,
      default: 1024,
      description: 'RSA keys of the chain shorter than this make it `fail` (RFC 8301 section 3.2).',
    }),
    seal: Type.Optional(Seal),
  },
  { additionalProperties: false },
);

/** X.7.29 "ARC validation failure" (registered by RFC 8617 in the enhanced status code registry). */
const REPLIES: DefaultReplies = {
  reject: reply(550, '5.7.29', 'ARC validation failure'),
  tempfail: reply(451, '4.7.29', 'ARC validation failure, try again later'),
};

/** An ARC header field name at the start of a line of the header section. */
const ARC_FIELD = /^arc-(?:seal|message-signature|authentication-results)[ \t]*:/im;
/** How much of the header section is looked at for ARC fields (longer ones are verified in full). */
const HEADER_PEEK_BYTES = 1024 * 1024;

/** What the verification pass leaves for the seal: the parsed headers, the chain, the body hash. */
type Verified = Pick<Awaited<ReturnType<typeof dkimVerify>>, 'headers' | 'arc' | 'seal'>;

/** The parts of mailauth's streaming DKIM verifier (`lib/dkim/dkim-verifier.js`, untyped) used here. */
interface MailauthVerifier extends Writable {
  prepareSignature(signature: { type?: string; skip?: boolean }): void;
  readonly headers: Verified['headers'];
  readonly arc: Verified['arc'] | undefined;
  readonly seal: Verified['seal'] | undefined;
}
const { DkimVerifier } = createRequire(import.meta.url)('mailauth/lib/dkim/dkim-verifier.js') as {
  DkimVerifier: new (options: object) => MailauthVerifier;
};

/**
 * mailauth's verifier without its DKIM pass: DKIM-Signature fields are
 * dkim-verify's business (its results are on the transaction and go into
 * ARC-Authentication-Results), so here they are skipped (no key lookup, no
 * body hash, no signature check) and only the newest ARC-Message-Signature is
 * verified, which `arc()` needs for the chain.
 */
class ArcVerifier extends DkimVerifier {
  override prepareSignature(signature: { type?: string; skip?: boolean }): void {
    super.prepareSignature(signature);
    if (signature.type === 'DKIM') signature.skip = true;
  }
}

async function verifyArcSets(source: Readable, options: object): Promise<Verified> {
  const verifier = new ArcVerifier(options);
  await pipeline(source, verifier);
  const { headers, arc, seal } = verifier;
  // As dkimVerify returns them: each only when the verifier set it.
  return {
    ...(headers === undefined ? {} : { headers }),
    ...(arc === undefined ? {} : { arc }),
    ...(seal === undefined ? {} : { seal }),
  };
}

/** What the seal needs from the verification pass (headers, the chain, the body hash). */
interface SealInput {
  readonly verified: Verified;
  readonly cv: 'none' | 'pass' | 'fail';
}

export default definePlugin({
  name: 'arc',
  description:
    'Verifies the ARC chain of arriving mail (RFC 8617) and seals forwarded mail with the next ARC set.',
  schema,
  async register(api, config) {
    validateActions('arc', config.actions);
    const resolver = mailauthResolver(api.server.dns);
    // One authserv-id for the server: auth-results' (its `authservId`), else the hostname.
    const authservId = () => api.service('authserv')?.id ?? api.server.hostname;
    const pending = new WeakMap<Transaction, SealInput>();
    const sealOptions =
      config.seal === undefined
        ? undefined
        : {
            signingDomain: config.seal.domain,
            selector: config.seal.selector,
            privateKey: (await loadSigningKey(config.seal.keyFile)).pem,
            ...(config.seal.algorithm === undefined ? {} : { algorithm: config.seal.algorithm }),
          };

    const none = (tx: Transaction): ArcResult => ({
      result: 'none',
      instance: 0,
      sealers: [],
      // RFC 8617 section 6: the connecting address SHOULD be recorded.
      properties: { 'smtp.remote-ip': tx.session.remote.address },
    });

    api.hooks.message.tap(
      async (tx, message) => {
        if (sealOptions === undefined) {
          // Most mail has no ARC set: a look at the header section spares a second DKIM pass over the message
          // (at the header parsed once for every check, when the message is small enough to be).
          const parsed = await messageHeader(tx, message);
          const head =
            parsed !== undefined && parsed.text.length <= HEADER_PEEK_BYTES
              ? parsed.text
              : await readHeaderSection(message.stream(), HEADER_PEEK_BYTES);
          if (head !== undefined && !ARC_FIELD.test(head)) {
            recordResult(tx, 'arc', none(tx));
            return decide(tx, 'arc', 'none', config.actions, REPLIES);
          }
        }
        // With `seal`, mailauth also hashes the body for the ARC-Message-Signature in the same pass.
        const verified = await verifyArcSets(message.stream(), {
          resolver,
          minBitLength: config.minKeyBits,
          ...(sealOptions === undefined ? {} : { seal: { ...sealOptions } }),
        });
        // The verifier's own object (it carries the chain, the newest AMS result and the key cache); its
        // `chain` is `false` without ARC sets, which `arc()` reads as no chain, whatever the typings say.
        const data = (verified.arc ?? { chain: [] }) as ARCData;
        const out = await arc(data, { resolver, minBitLength: config.minKeyBits });
        const value = out.status.result === 'pass' ? 'pass' : out.status.result === 'fail' ? 'fail' : 'none';
        const chain = verified.arc?.chain || [];
        const sealers = chain.map((entry) => String(entry['arc-seal']?.parsed?.d?.value ?? ''));
        const instance = typeof out.i === 'number' ? out.i : chain.length;
        const result: ArcResult =
          value === 'none'
            ? none(tx)
            : {
                ...none(tx),
                result: value,
                ...(value === 'fail' && out.status.comment ? { reason: out.status.comment } : {}),
                instance,
                sealers,
              };
        recordResult(tx, 'arc', result);
        tx.log.debug({ arc: result }, 'ARC verified');
        if (sealOptions !== undefined) pending.set(tx, { verified, cv: value });
        return decide(tx, 'arc', value, config.actions, REPLIES);
      },
      { stage: Stage.NORMAL },
    );

    if (sealOptions === undefined) return;
    // After every check (DMARC records at `LATE`) and before auth-results (`LAST`): our set carries them all.
    api.hooks.message.tap(
      async (tx, message) => {
        const input = pending.get(tx);
        pending.delete(tx);
        if (!input) return undefined;
        const { verified, cv } = input;
        // Set on the seal options by the verification pass (relaxed body hash of the spooled message).
        const bodyHash = (verified.seal as { bodyHash?: string } | undefined)?.bodyHash;
        const results = registeredResults(allResults(tx));
        const authResults =
          // Folded one clause per line, as Authentication-Results (a line stays under 998 octets).
          results.length === 0
            ? `${authservId()}; none`
            : `${authservId()};\r\n\t${results.map((r) => resinfo(r, tx.utf8)).join(';\r\n\t')}`;
        const sealed = await createSeal(false, {
          headers: verified.headers,
          ...(verified.arc === undefined ? {} : { arc: verified.arc }),
          seal: {
            ...sealOptions,
            ...(bodyHash === undefined ? {} : { bodyHash }),
            cv,
            authResults,
            signTime: new Date(api.server.clock.now()),
          },
        });
        if (sealed.headers.length === 0) {
          // RFC 8617 5.1 step 2: a chain whose newest seal says cv=fail is not sealed again (and a key may fail).
          tx.log.warn({ errors: sealed.errors.map((e) => e.err.message) }, 'ARC: message not sealed');
          return undefined;
        }
        message.prepend(sealed.headers);
        tx.log.debug({ instance: (resultsOf(tx, 'arc')[0]?.instance ?? 0) + 1 }, 'ARC sealed');
        return undefined;
      },
      { stage: Stage.RELAY },
    );
  },
});
