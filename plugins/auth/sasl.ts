/**
 * SASL mechanisms for AUTH: each turns the client's (base64-decoded)
 * responses into an `AuthRequest`. PLAIN (RFC 4616), LOGIN (the widely
 * deployed draft-murchison-sasl-login), XOAUTH2 (Google's bearer-token
 * profile) and OAUTHBEARER (RFC 7628).
 */
import type { AuthRequest } from '../../core/types.ts';
import { prepare } from './saslprep.ts';

/** Why an exchange stopped before producing credentials. */
export type SaslStopReason = 'cancelled' | 'bad-base64' | 'closed';

/** Thrown by `SaslExchange.challenge` when the client cancels, sends bad base64 or goes away. */
export class SaslStop extends Error {
  readonly reason: SaslStopReason;
  constructor(reason: SaslStopReason) {
    super(`SASL exchange stopped: ${reason}`);
    this.name = 'SaslStop';
    this.reason = reason;
  }
}

/** The server side of one exchange. */
export interface SaslExchange {
  /** The decoded initial response from the AUTH command line, if the client gave one. */
  readonly initial: Buffer | undefined;
  /** Send a `334` challenge (base64-encoded here) and return the decoded response. */
  challenge(data: string): Promise<Buffer>;
}

/**
 * Why an exchange produced no credentials: the client's message is malformed
 * (`501 5.5.2`), or well formed but its credentials cannot be valid, e.g. a
 * SASLprep-prohibited character (verification fails: `535 5.7.8`).
 */
export type MechanismFailure = 'malformed' | 'invalid';

export type MechanismResult =
  | { readonly ok: true; readonly request: AuthRequest }
  | { readonly ok: false; readonly failure: MechanismFailure };

const malformed: MechanismResult = Object.freeze({ ok: false, failure: 'malformed' });
const invalid: MechanismResult = Object.freeze({ ok: false, failure: 'invalid' });

export interface Mechanism {
  readonly name: MechanismName;
  /** Run the exchange up to the credentials, or say why there are none. */
  run(x: SaslExchange): Promise<MechanismResult>;
  /**
   * Mechanisms that report a failure inside the exchange (a `334` with an
   * error, answered by the client) before the final `535`.
   */
  reportFailure?(x: SaslExchange): Promise<void>;
}

export const MECHANISM_NAMES = ['PLAIN', 'LOGIN', 'XOAUTH2', 'OAUTHBEARER'] as const;
export type MechanismName = (typeof MECHANISM_NAMES)[number];

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Strict base64 (RFC 4648 section 4, padded, no whitespace); undefined when malformed. */
export function decodeBase64(text: string): Buffer | undefined {
  if (!BASE64.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}

/** The AUTH command's initial response: `=` is an empty one (RFC 4954 section 4). */
export function decodeInitialResponse(text: string): Buffer | undefined {
  return text === '=' ? Buffer.alloc(0) : decodeBase64(text);
}

function text(buf: Buffer): string | undefined {
  try {
    return utf8.decode(buf);
  } catch {
    return undefined;
  }
}

const first = (x: SaslExchange, prompt = '') =>
  x.initial ? Promise.resolve(x.initial) : x.challenge(prompt);

/**
 * RFC 4616: `[authzid] NUL authcid NUL passwd`. The three are SASLprep'd as
 * query strings (RFC 4616 section 2); the request carries the prepared forms.
 */
const plain: Mechanism = {
  name: 'PLAIN',
  async run(x) {
    const message = text(await first(x));
    const parts = message?.split('\0');
    if (parts?.length !== 3) return malformed;
    const [authzid, authcid, passwd] = parts as [string, string, string];
    if (authcid === '' || passwd === '') return malformed;
    const username = prepare(authcid);
    const secret = prepare(passwd);
    const identity = authzid === '' ? username : prepare(authzid);
    if (username === undefined || secret === undefined || identity === undefined) return invalid;
    const request: AuthRequest =
      identity === username
        ? { mechanism: 'PLAIN', username, secret }
        : { mechanism: 'PLAIN', username, secret, authzid: identity };
    return { ok: true, request };
  },
};

/**
 * LOGIN: the user name (or the initial response), then the password, each
 * after a prompt; both SASLprep'd like PLAIN's. The password is asked for even
 * when the user name cannot be prepared, so the exchange ends as the client expects.
 */
const login: Mechanism = {
  name: 'LOGIN',
  async run(x) {
    const name = text(await first(x, 'Username:'));
    if (name === undefined || name === '' || name.includes('\0')) return malformed;
    const password = text(await x.challenge('Password:'));
    if (password === undefined || password === '') return malformed;
    const username = prepare(name);
    const secret = prepare(password);
    if (username === undefined || secret === undefined) return invalid;
    return { ok: true, request: { mechanism: 'LOGIN', username, secret } };
  },
};

/** Split `key=value` pairs separated by ^A, ending in ^A^A. */
function kvPairs(s: string): Map<string, string> | undefined {
  if (!s.endsWith('\x01\x01')) return undefined;
  const pairs = new Map<string, string>();
  for (const item of s.slice(0, -2).split('\x01')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) return undefined;
    pairs.set(item.slice(0, eq).toLowerCase(), item.slice(eq + 1));
  }
  return pairs;
}

function bearerToken(value: string | undefined): string | undefined {
  const m = value === undefined ? null : /^bearer +(\S+)$/i.exec(value);
  return m?.[1];
}

/** After a failed bearer token: a 334 with a JSON error, which the client acknowledges. */
async function bearerFailure(x: SaslExchange, status: string): Promise<void> {
  await x.challenge(JSON.stringify({ status, schemes: 'bearer' }));
}

/** XOAUTH2: `user=NAME ^A auth=Bearer TOKEN ^A^A`. */
const xoauth2: Mechanism = {
  name: 'XOAUTH2',
  async run(x) {
    const message = text(await first(x));
    const pairs = message === undefined ? undefined : kvPairs(message);
    const username = pairs?.get('user');
    const secret = bearerToken(pairs?.get('auth'));
    if (username === undefined || username === '' || secret === undefined) return malformed;
    return { ok: true, request: { mechanism: 'XOAUTH2', username, secret } };
  },
  reportFailure: (x) => bearerFailure(x, '401'),
};

/** RFC 5801 saslname: `=2C` is a comma, `=3D` an equals sign. */
function saslName(s: string): string | undefined {
  if (/=(?!2C|3D)/.test(s)) return undefined;
  return s.replace(/=2C/g, ',').replace(/=3D/g, '=');
}

/** RFC 7628: GS2 header `n,a=USER,` then `^A` key=value pairs with `auth=Bearer TOKEN`, ending `^A^A`. */
const oauthbearer: Mechanism = {
  name: 'OAUTHBEARER',
  async run(x) {
    const message = text(await first(x));
    if (message === undefined) return malformed;
    const m = /^([ny]),(?:a=([^,]*))?,\x01/.exec(message); // channel binding (p=) is not offered
    if (!m) return malformed;
    const username = m[2] === undefined ? '' : saslName(m[2]);
    const pairs = kvPairs(message.slice(m[0].length - 1));
    const secret = bearerToken(pairs?.get('auth'));
    if (username === undefined || secret === undefined) return malformed;
    return { ok: true, request: { mechanism: 'OAUTHBEARER', username, secret } };
  },
  reportFailure: (x) => bearerFailure(x, 'invalid_token'),
};

export const MECHANISMS: ReadonlyMap<MechanismName, Mechanism> = new Map(
  [plain, login, xoauth2, oauthbearer].map((m) => [m.name, m]),
);
