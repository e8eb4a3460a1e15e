/**
 * Replies are plain values. The core and plugins return them from verdict hooks;
 * the reply writer turns them into RFC 5321 section 4.2 reply lines.
 */

/** An RFC 5321 reply: a three-digit code, an RFC 3463 enhanced status code and short text. */
export interface Reply {
  /** Three-digit reply code (RFC 5321 4.2.3). */
  readonly code: number;
  /** RFC 3463 enhanced status code `class.subject.detail`, shown when the session enables it. */
  readonly enhanced?: string;
  /** One line, or several for a multi-line reply. Client-facing: keep it short, no internal detail. */
  readonly text: string | readonly string[];
  /** Close the connection after sending this reply. */
  readonly disconnect?: boolean;
}

/** Build a reply value. */
export function reply(
  code: number,
  enhanced: string | undefined,
  text: string | readonly string[],
  disconnect = false,
): Reply {
  const r: { code: number; enhanced?: string; text: string | readonly string[]; disconnect?: boolean } = {
    code,
    text,
  };
  if (enhanced !== undefined) r.enhanced = enhanced;
  if (disconnect) r.disconnect = true;
  return Object.freeze(r);
}

export function isPositive(r: Reply): boolean {
  return r.code >= 200 && r.code < 400;
}
export function isTransient(r: Reply): boolean {
  return r.code >= 400 && r.code < 500;
}
export function isPermanent(r: Reply): boolean {
  return r.code >= 500;
}

/**
 * Named replies the core uses. Plugins may use them too; the catalogue keeps
 * codes and enhanced codes consistent (RFC 5321 4.2.2/4.3.2, RFC 3463, RFC 5248).
 */
export const Replies = Object.freeze({
  ok: reply(250, '2.0.0', 'OK'),
  senderOk: reply(250, '2.1.0', 'Sender OK'),
  recipientOk: reply(250, '2.1.5', 'Recipient OK'),
  resetOk: reply(250, '2.0.0', 'Reset OK'),
  noopOk: reply(250, '2.0.0', 'OK'),
  startData: reply(354, undefined, 'End data with <CR><LF>.<CR><LF>'),
  bye: reply(221, '2.0.0', 'Bye', true),
  cannotVerify: reply(252, '2.5.0', 'Cannot VRFY user, but will accept message and attempt delivery'),
  help: reply(214, '2.0.0', ['mailframe: see RFC 5321', 'End of HELP info']),

  /** 421 service shutting down (RFC 5321 3.8). */
  shuttingDown: reply(421, '4.3.2', 'Service shutting down, try again later', true),
  tooManyConnections: reply(421, '4.7.0', 'Too many connections, try again later', true),
  tooManyErrors: reply(421, '4.7.0', 'Too many errors, closing connection', true),
  timeout: reply(421, '4.4.2', 'Timeout, closing connection', true),
  earlyTalker: reply(554, '5.5.0', 'Protocol error: talking before the greeting', true),

  localError: reply(451, '4.3.0', 'Local error in processing, try again later'),
  tempUnavailable: reply(450, '4.2.0', 'Mailbox temporarily unavailable'),
  insufficientStorage: reply(452, '4.3.1', 'Insufficient system storage'),
  tooManyRecipients: reply(452, '4.5.3', 'Too many recipients'),

  lineTooLong: reply(500, '5.5.6', 'Line too long'),
  bareLineFeedCommand: reply(500, '5.5.2', 'Command line must end with CRLF, not a bare LF'),
  unknownCommand: reply(500, '5.5.2', 'Command not recognized'),
  syntaxError: reply(501, '5.5.4', 'Syntax error in parameters or arguments'),
  badSenderSyntax: reply(501, '5.1.7', 'Bad sender address syntax'),
  badRecipientSyntax: reply(501, '5.1.3', 'Bad recipient address syntax'),
  notImplemented: reply(502, '5.5.1', 'Command not implemented'),
  badSequence: reply(503, '5.5.1', 'Bad sequence of commands'),
  needHelo: reply(503, '5.5.1', 'Send EHLO/HELO first'),
  needLhlo: reply(503, '5.5.1', 'Send LHLO first'),
  needMail: reply(503, '5.5.1', 'Need MAIL command first'),
  nestedMail: reply(503, '5.5.1', 'Sender already specified'),
  needRcpt: reply(503, '5.5.1', 'Need RCPT command first'),
  /** HELO or EHLO on an LMTP listener (RFC 2033 4.1). */
  lmtpNeedsLhlo: reply(500, '5.5.1', 'This is an LMTP service: use LHLO'),
  noValidRecipients: reply(554, '5.5.1', 'No valid recipients'),
  paramNotRecognized: reply(555, '5.5.4', 'MAIL FROM/RCPT TO parameter not recognized or not implemented'),
  relayDenied: reply(550, '5.7.1', 'Relaying denied'),
  noSuchUser: reply(550, '5.1.1', 'No such user here'),
  messageTooBig: reply(552, '5.3.4', 'Message size exceeds fixed maximum message size'),
  /** The header section is over `limits.maxHeaderSize` (RFC 3463 X.3.4: too big for the system). */
  headerTooBig: reply(552, '5.3.4', 'Message header section exceeds fixed maximum size'),
  /** One header field is over `limits.maxHeaderFieldLength` (RFC 3463 X.6.0: the content cannot be handled). */
  headerFieldTooLong: reply(554, '5.6.0', 'Message header field too long'),
  /** More `Received` fields than `limits.maxReceivedHeaders`: a mail loop (RFC 5321 6.3, RFC 3463 X.4.6). */
  routingLoop: reply(554, '5.4.6', 'Too many Received header fields: mail loop suspected'),
  bareLineEnding: reply(550, '5.5.2', 'Message contains bare CR or LF line endings, which are not allowed'),
  nonAsciiAddress: reply(553, '5.6.7', 'Non-ASCII addresses require SMTPUTF8'),
  transactionFailed: reply(554, '5.0.0', 'Transaction failed'),
} satisfies Record<string, Reply>);

/** A reply saying the message was stored and will be delivered. */
export function queuedReply(id: string): Reply {
  return reply(250, '2.0.0', `Ok: queued as ${id}`);
}
