/**
 * Reply output for one session. Replies to pipelined commands are queued and
 * written once the buffered input is exhausted (RFC 2920), so a pipelined
 * group costs one write. Every 4xx/5xx counts toward `limits.maxErrors`.
 */
import { formatReply } from '../codec/reply-format.ts';
import { Replies, type Reply } from '../reply.ts';
import type { SmtpSession } from './session.ts';

export class ReplyOutput {
  readonly #session: SmtpSession;
  #pending: string[] = [];
  #errors = 0;
  /** A closing reply (QUIT, 421, a `disconnect` reply) is queued: nothing after it is processed. */
  closing = false;

  constructor(session: SmtpSession) {
    this.#session = session;
  }

  /** Queue a reply for the next `flush`. Returns undefined so command handlers can `return` it. */
  queue(r: Reply, enhanced = this.#session.enhancedStatusCodes): undefined {
    const s = this.#session;
    if (s.state === 'closed') return undefined;
    this.#pending.push(formatReply(r, enhanced));
    const observe = s.host.observers.reply;
    if (observe) observe(s, r, s.verb);
    // RFC 5321 3.8/4.2.2: 421 means the server is closing the channel, whoever produced it.
    // Marked before counting, so a closing reply that reaches maxErrors is not followed by a second 421.
    if (r.disconnect || r.code === 421) this.closing = true;
    if (r.code >= 400) this.#countError();
    return undefined;
  }

  /**
   * Queue an error reply that does not count toward `limits.maxErrors`
   * (a recipient past the limit: RFC 5321 4.5.3.1.10 expects the client to carry on; the further
   * per-recipient replies to one LMTP message, so that a refusal counts once).
   */
  queueUncounted(r: Reply): undefined {
    const s = this.#session;
    if (s.state === 'closed') return undefined;
    this.#pending.push(formatReply(r, s.enhancedStatusCodes));
    const observe = s.host.observers.reply;
    if (observe) observe(s, r, s.verb);
    return undefined;
  }

  #countError(): void {
    this.#errors++;
    const s = this.#session;
    if (this.#errors >= s.host.limits.maxErrors && !this.closing) {
      s.log.info({ errors: this.#errors }, 'too many errors');
      this.#pending.push(formatReply(Replies.tooManyErrors, s.enhancedStatusCodes));
      s.host.observers.reply?.(s, Replies.tooManyErrors, undefined);
      this.closing = true;
    }
  }

  /** Write what is queued in one write; then close after a closing reply, or 421 when draining. */
  flush(): void {
    const s = this.#session;
    if (this.#pending.length > 0 && s.state !== 'closed') {
      const text = this.#pending.length === 1 ? (this.#pending[0] as string) : this.#pending.join('');
      this.#pending = [];
      s.socket.write(text);
      // The client's turn: its time starts when our reply goes out, not when its last line came in.
      s.deadlines.restart();
    }
    if (this.closing) s.close();
    else if (s.host.draining && !s.active && s.state !== 'connecting' && s.state !== 'closed') {
      s.verb = undefined;
      this.sendNow(Replies.shuttingDown);
    }
  }

  /** Send a reply immediately (out of band of pipelining) and close if it says so. */
  sendNow(r: Reply): void {
    this.queue(r);
    this.flush();
  }
}
