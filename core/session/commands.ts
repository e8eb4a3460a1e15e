/**
 * Command dispatch: one command line in, its reply queued. The core verbs of
 * RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY, HELP) are
 * answered here with the verdict hooks; any other verb goes to the one a
 * plugin registered, or is `500 5.5.2`. A handler returns a promise only when
 * it went async; the input pump then waits for it before the next line.
 */
import { parsePath } from '../address.ts';
import { parseCommand, parseParams, peekParams } from '../codec/command.ts';
import { callBail, callWaterfall } from '../hooks.ts';
import type { ParamContext, VerbContext, VerbDefinition } from '../plugin.ts';
import { isPositive, Replies, type Reply, reply } from '../reply.ts';
import type { Address, Helo, Params, RecipientAttributes } from '../types.ts';
import type { SmtpSession } from './session.ts';
import { upgradeToTls } from './tls-upgrade.ts';

/** Handle one command line of `octets` octets; returns a promise when the command went async. */
export function runCommand(s: SmtpSession, line: string, octets: number): Promise<void> | undefined {
  const { verb, argument } = parseCommand(line);
  s.verb = verb;
  const out = s.output;
  // The line reader let through the longest line anything allows; this command may allow less.
  if (octets > s.host.limits.maxLineLength && octets > lineLimit(s, verb, argument))
    return out.queue(Replies.lineTooLong);
  if (s.state === 'rejected') {
    if (verb === 'QUIT') out.queue(Replies.bye);
    else out.queue(Replies.badSequence);
    return undefined;
  }
  const lmtp = s.listener.protocol === 'lmtp';
  switch (verb) {
    case 'EHLO':
    case 'HELO':
      // RFC 2033 4.1: no positive reply to HELO or EHLO on LMTP; 500 is recommended.
      if (lmtp) return out.queue(Replies.lmtpNeedsLhlo);
      return helo(s, verb, argument);
    case 'LHLO':
      if (lmtp) return helo(s, verb, argument);
      break;
    case 'MAIL':
      return mail(s, argument);
    case 'RCPT':
      return rcpt(s, argument);
    case 'DATA':
      return data(s, argument);
    case 'RSET':
      if (argument !== '') return out.queue(Replies.syntaxError);
      if (s.transaction) return whenSettled(s.resetTransaction('rset'), () => out.queue(Replies.resetOk));
      return out.queue(Replies.resetOk);
    case 'NOOP':
      return out.queue(Replies.noopOk);
    case 'QUIT':
      return out.queue(Replies.bye);
  }
  const ext = s.host.registry.verb(verb);
  if (ext) return extensionVerb(s, verb, argument, ext);
  switch (verb) {
    case 'VRFY':
      return out.queue(argument === '' ? Replies.syntaxError : Replies.cannotVerify);
    case 'HELP':
      return out.queue(Replies.help);
    case 'EXPN':
    case 'TURN':
      return out.queue(Replies.notImplemented);
  }
  s.debug({ verb: verb.slice(0, 16) }, 'unknown command');
  return out.queue(Replies.unknownCommand);
}

/**
 * The octets a line of `verb` may have (RFC 5321 4.5.3.1.4: 512, raised by an
 * extension only for its own command or parameters): a registered verb's own
 * limit; MAIL and RCPT by the parameters the line carries.
 */
function lineLimit(s: SmtpSession, verb: string, argument: string): number {
  const base = s.host.limits.maxLineLength;
  const registry = s.host.registry;
  if (verb === 'MAIL' || verb === 'RCPT') {
    const split = peekParams(argument, verb === 'MAIL' ? 'FROM' : 'TO');
    const params = split && parseParams(split.paramsText, true);
    return params ? registry.paramsLineLimit(verb, params.keys(), base) : base;
  }
  const def = registry.verb(verb);
  return def ? registry.verbLineLimit(def, base) : base;
}

/** EHLO, HELO or (LMTP) LHLO, which is answered as EHLO is. */
function helo(s: SmtpSession, verb: Helo['verb'], argument: string): Promise<void> | undefined {
  const domain = argument.trim();
  if (domain === '' || /[\s\x00-\x1f\x7f]/.test(domain)) {
    return s.output.queue(reply(501, '5.5.4', `${verb} requires a domain or address literal`));
  }
  const h: Helo = { verb, domain };
  const hooks = s.host.hooks;
  const run = async () => {
    if (s.transaction) await s.resetTransaction('rset');
    if (hooks.ehlo.isUsed()) {
      const verdict = await callBail(hooks, 'ehlo', s, h);
      if (verdict && !isPositive(verdict)) return s.output.queue(verdict, false);
    }
    s.helo = h;
    s.enhancedStatusCodes = false;
    if (verb === 'HELO') return s.output.queue(reply(250, undefined, s.hostname), false);
    const keywords = hooks.capabilities.isUsed() ? await callWaterfall(hooks, 'capabilities', [], s) : [];
    s.output.queue(reply(250, undefined, [`${s.hostname} greets ${domain}`, ...keywords]), false);
  };
  return run();
}

/** Run MAIL/RCPT parameter handlers; a reply means refuse the command. */
function applyParams(
  s: SmtpSession,
  command: 'MAIL' | 'RCPT',
  params: Params,
  ctx: ParamContext,
): Reply | undefined {
  for (const [key, value] of params) {
    const def = s.host.registry.param(command, key);
    if (!def) return Replies.paramNotRecognized;
    const verdict = def.handler(value, ctx);
    if (verdict) return verdict;
  }
  return undefined;
}

function mail(s: SmtpSession, argument: string): Promise<void> | undefined {
  const out = s.output;
  if (!s.helo) return out.queue(s.helloFirst);
  if (s.transaction) return out.queue(Replies.nestedMail);
  if (s.host.draining) return out.queue(Replies.shuttingDown);
  const split = peekParams(argument, 'FROM');
  if (!split) return out.queue(Replies.syntaxError);
  const params = parseParams(split.paramsText, true);
  if (!params) return out.queue(Replies.syntaxError);
  // After HELO (not EHLO) no service extension is in effect: any parameter is one not recognized
  // (RFC 5321 4.1.1.1, RFC 1869).
  if (params.size > 0 && s.helo.verb === 'HELO') return out.queue(Replies.paramNotRecognized);
  const tx = s.openTransaction();
  const refused = applyParams(s, 'MAIL', params, { session: s, tx, recipient: undefined });
  if (refused) return out.queue(refused);
  if (!tx.utf8 && hasNonAscii(split.paramsText)) return out.queue(Replies.syntaxError);
  const parsed = parsePath(split.pathText, { utf8: tx.utf8, allowNull: true, allowPostmaster: false });
  if (!parsed.ok) return out.queue(addressError(parsed.error, 'sender'));
  if (parsed.rest.trim() !== '') return out.queue(Replies.syntaxError);
  tx.from = { address: parsed.address, params };
  if (!s.host.hooks.mail.isUsed()) {
    s.transaction = tx;
    return out.queue(Replies.senderOk);
  }
  return whenSettled(callBail(s.host.hooks, 'mail', tx, tx.from), (verdict) => {
    if (verdict && !isPositive(verdict)) {
      tx.log.info({ from: tx.from.address?.address ?? '', code: verdict.code }, 'sender refused');
      return out.queue(verdict);
    }
    s.transaction = tx;
    out.queue(verdict ?? Replies.senderOk);
  });
}

function rcpt(s: SmtpSession, argument: string): Promise<void> | undefined {
  const out = s.output;
  const tx = s.transaction;
  if (!tx) return out.queue(s.helo ? Replies.needMail : s.helloFirst);
  if (tx.recipients.length >= s.host.limits.maxRecipients) return tooManyRecipients(s);
  const split = peekParams(argument, 'TO');
  if (!split) return out.queue(Replies.syntaxError);
  const params = parseParams(split.paramsText, tx.utf8);
  if (!params) return out.queue(Replies.syntaxError);
  if (params.size > 0 && s.helo?.verb === 'HELO') return out.queue(Replies.paramNotRecognized); // as for MAIL
  const attributes: RecipientAttributes = {};
  const refused = applyParams(s, 'RCPT', params, { session: s, tx, recipient: attributes });
  if (refused) return out.queue(refused);
  const parsed = parsePath(split.pathText, { utf8: tx.utf8, allowNull: false, allowPostmaster: true });
  if (!parsed.ok) return out.queue(addressError(parsed.error, 'recipient'));
  if (parsed.rest.trim() !== '') return out.queue(Replies.syntaxError);
  const address = parsed.address as Address;
  const to = { address, params };
  return whenSettled(callBail(s.host.hooks, 'rcpt', tx, to), (verdict) => {
    if (s.transaction !== tx) return out.queue(Replies.needMail);
    if (!verdict) verdict = Replies.relayDenied;
    if (!isPositive(verdict)) {
      tx.log.info({ to: address.address, code: verdict.code }, 'recipient refused');
      return out.queue(verdict);
    }
    tx.recipients.push({ address, params, attributes });
    out.queue(verdict);
  });
}

/**
 * A recipient past `limits.maxRecipients`: 452 4.5.3, and the client sends DATA
 * for those accepted and the rest in another transaction (RFC 5321 4.5.3.1.10).
 * Not an error, up to `limits.recipientOvershoot` per session (Postfix's
 * smtpd_recipient_overshoot_limit), so a client that pipelines past the limit
 * keeps its transaction; beyond that each one counts, so none can loop forever.
 */
function tooManyRecipients(s: SmtpSession): undefined {
  if (++s.recipientsOverLimit <= s.host.limits.recipientOvershoot)
    return s.output.queueUncounted(Replies.tooManyRecipients);
  return s.output.queue(Replies.tooManyRecipients);
}

function data(s: SmtpSession, argument: string): Promise<void> | undefined {
  const out = s.output;
  const tx = s.transaction;
  if (!tx) return out.queue(s.helo ? Replies.needMail : s.helloFirst);
  if (argument !== '') return out.queue(Replies.syntaxError);
  if (s.messageIfStarted?.chunkedOpen) return out.queue(reply(503, '5.5.1', 'DATA not allowed after BDAT'));
  if (tx.recipients.length === 0) {
    // RFC 2033 4.2: on LMTP, DATA without a successful RCPT fails with 503.
    return out.queue(s.listener.protocol === 'lmtp' ? Replies.needRcpt : Replies.noValidRecipients);
  }
  if (!s.host.hooks.data.isUsed()) {
    out.queue(Replies.startData);
    s.message.beginData(tx);
    return undefined;
  }
  return whenSettled(callBail(s.host.hooks, 'data', tx), (verdict) => {
    if (verdict && !isPositive(verdict)) return out.queue(verdict);
    out.queue(Replies.startData);
    s.message.beginData(tx);
  });
}

/** A verb a plugin registered: its handler gets the `VerbContext` seams. */
function extensionVerb(
  s: SmtpSession,
  verb: string,
  argument: string,
  def: VerbDefinition,
): Promise<void> | undefined {
  if (def.requiresHelo !== false && !s.helo) return s.output.queue(s.helloFirst);
  if (def.outsideTransaction && s.transaction) return s.output.queue(Replies.badSequence);
  const ctx: VerbContext = {
    session: s,
    verb,
    argument,
    send: (r) => s.output.sendNow(r),
    readLine: () => s.input.readLine(s.host.registry.verbLineLimit(def, s.host.limits.maxLineLength)),
    upgradeToTls: (options) => upgradeToTls(s, options),
    checkCredentials: async (request) => callBail(s.host.hooks, 'auth', s, request),
    reconnectAs: (remote) => s.reconnectAs(remote),
    chunks: s.message.chunks,
  };
  return (async () => {
    const r = await def.handler(ctx);
    if (r) s.output.queue(r);
  })();
}

/** Run `next` on a value that may still be pending: synchronously when it is not. */
function whenSettled<T>(value: T | Promise<T>, next: (v: T) => void): Promise<void> | undefined {
  if (value instanceof Promise) return value.then(next);
  next(value);
  return undefined;
}

function addressError(error: 'syntax' | 'too-long' | 'non-ascii', role: 'sender' | 'recipient'): Reply {
  if (error === 'non-ascii') return Replies.nonAsciiAddress;
  if (error === 'too-long') return reply(501, role === 'sender' ? '5.1.7' : '5.1.3', 'Path too long');
  return role === 'sender' ? Replies.badSenderSyntax : Replies.badRecipientSyntax;
}

function hasNonAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return true;
  return false;
}
