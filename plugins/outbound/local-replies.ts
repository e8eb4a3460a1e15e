/**
 * The replies the outbound client reports when the failure is on this side or
 * on the connection rather than in a server's answer (RFC 3463 codes). They go
 * into delivery results and bounces, never onto the wire.
 */
import { type Reply, reply } from '../../core/reply.ts';

export const OutboundReplies = Object.freeze({
  cannotConnect: (mta: string): Reply => reply(451, '4.4.1', `Cannot connect to ${mta}`),
  connectionLost: (mta: string): Reply => reply(451, '4.4.2', `Connection to ${mta} lost`),
  timeout: (mta: string, stage: string): Reply =>
    reply(451, '4.4.2', `Timeout waiting for ${mta} to answer ${stage}`),
  protocolError: (mta: string): Reply => reply(451, '4.5.0', `Protocol error in the answer of ${mta}`),
  tlsFailed: (mta: string): Reply => reply(451, '4.7.5', `TLS handshake with ${mta} failed`),
  certificateNotVerified: (mta: string): Reply =>
    reply(451, '4.7.5', `TLS certificate of ${mta} did not verify`),
  tlsNotOffered: (mta: string): Reply =>
    reply(451, '4.7.4', `TLS is required, but ${mta} does not offer STARTTLS`),
  tlsRefused: (mta: string, remote: string): Reply =>
    reply(451, '4.7.4', `TLS is required, but ${mta} refused STARTTLS: ${remote}`),
  /** RFC 8689: the next hop cannot carry a REQUIRETLS message. */
  requireTlsUnsupported: (mta: string): Reply =>
    reply(550, '5.7.30', `REQUIRETLS support required, but ${mta} does not offer it`),
  requireTlsUnverified: (mta: string): Reply =>
    reply(451, '4.7.5', `REQUIRETLS needs a verified TLS certificate, and that of ${mta} did not verify`),
  authWithoutTls: (mta: string): Reply =>
    reply(451, '4.7.4', `Not sending credentials to ${mta} without TLS`),
  authNotOffered: (mta: string): Reply =>
    reply(451, '4.7.0', `Credentials are configured, but ${mta} offers no usable AUTH mechanism`),
  authFailed: (mta: string, remote: string): Reply =>
    reply(451, '4.7.0', `Authentication with ${mta} failed: ${remote}`),
  messageTooBig: (mta: string, limit: number): Reply =>
    reply(552, '5.3.4', `Message too big for ${mta} (limit ${limit} octets)`),
  /** RFC 6152: 8-bit data and no 8BITMIME; no conversion is attempted. */
  eightBitUnsupported: (mta: string): Reply =>
    reply(554, '5.6.3', `8-bit message, but ${mta} does not support 8BITMIME`),
  binaryUnsupported: (mta: string): Reply =>
    reply(554, '5.6.3', `Binary message, but ${mta} does not support BINARYMIME with CHUNKING`),
  /** RFC 6531 3.2: no SMTPUTF8 at the next hop. */
  utf8Unsupported: (mta: string): Reply =>
    reply(553, '5.6.7', `Internationalized address or headers, but ${mta} does not support SMTPUTF8`),
  badSender: (): Reply => reply(553, '5.1.7', 'Sender address cannot be sent in a command'),
  badRecipient: (): Reply => reply(553, '5.1.3', 'Recipient address cannot be sent in a command'),
  readFailed: (): Reply => reply(451, '4.3.0', 'Local error reading the queued message'),
  unexpectedReply: (mta: string, remote: string): Reply =>
    reply(451, '4.5.0', `Unexpected answer from ${mta}: ${remote}`),
});
