/**
 * Message reception for one session: DATA through the DATA decoder, and
 * messages in counted chunks (the `ChunkedMessage` seam BDAT uses), both into
 * the spool with backpressure, then the shared end of the message path:
 * header transforms, `message` hook, `queue` hook, the final reply.
 */

import { DataDecoder } from '../codec/data-decoder.ts';
import { HeaderLimits } from '../codec/header-limits.ts';
import { describe } from '../errors.ts';
import { callBail, callWaterfall, isReply } from '../hooks.ts';
import type { ChunkedMessage } from '../plugin.ts';
import { receivedHeader } from '../received.ts';
import { isPositive, queuedReply, Replies, type Reply, reply } from '../reply.ts';
import { type SpooledMessage, SpoolWriter } from '../spool.ts';
import type { SmtpTransaction } from '../transaction.ts';
import type { SmtpSession } from './session.ts';

export class MessageReceiver {
  readonly #session: SmtpSession;
  /** Data mode. */
  #decoder: DataDecoder | undefined;
  #spool: SpoolWriter | undefined;
  /** The header limits of the message being received (DATA or chunked). */
  #headers: HeaderLimits | undefined;
  /** An open chunked (BDAT) message. */
  #chunked: { spool: SpoolWriter; overflow: boolean; tx: SmtpTransaction } | undefined;
  /** A counted read in progress (raw mode). */
  #raw: { remaining: number; into: SpoolWriter | undefined; done: () => void } | undefined;
  #chunkApi: ChunkedMessage | undefined;

  constructor(session: SmtpSession) {
    this.#session = session;
  }

  #newSpool(tx: SmtpTransaction): SpoolWriter {
    const { host } = this.#session;
    const spool = new SpoolWriter(host.spoolDir, tx.id);
    this.#spool = spool;
    this.#headers = new HeaderLimits({
      maxSectionSize: host.limits.maxHeaderSize,
      maxFieldLength: host.limits.maxHeaderFieldLength,
    });
    return spool;
  }

  /** Write to the spool, holding the socket's input while the spool file drains. */
  #spoolWrite(spool: SpoolWriter, chunk: Buffer): void {
    const input = this.#session.input;
    if (!spool.write(chunk) && !input.held) {
      input.hold();
      spool.onDrain(() => input.release());
    }
  }

  // ---- DATA ---------------------------------------------------------------

  /** Switch to data mode for `tx`: received octets go through the DATA decoder into the spool. */
  beginData(tx: SmtpTransaction): void {
    const s = this.#session;
    const spool = this.#newSpool(tx);
    const headers = this.#headers as HeaderLimits;
    this.#decoder = new DataDecoder({
      maxSize: s.host.limits.maxMessageSize,
      onData: (chunk) => {
        // Costs one comparison per chunk once the header section is over.
        headers.write(chunk);
        this.#spoolWrite(spool, chunk);
      },
    });
    s.state = 'data';
    s.deadlines.armData(s.host.timeouts.data);
    if (!s.busy) {
      s.output.flush();
      const rest = s.input.lines.take();
      if (rest.length > 0) this.receiveData(rest);
    }
  }

  receiveData(chunk: Buffer): void {
    const decoder = this.#decoder;
    if (!decoder) return;
    const s = this.#session;
    const end = decoder.write(chunk);
    if (end < 0) {
      // Input may have been paused while it piled up in command mode (a slow hook): data mode reads on.
      s.input.resume();
      s.input.stopIfStarved();
      return;
    }
    s.state = 'command';
    s.deadlines.armCommand(s.host.timeouts.command);
    if (end < chunk.length) s.input.lines.push(chunk.subarray(end));
    s.busy = true;
    const spool = this.#spool as SpoolWriter;
    const tx = s.transaction as SmtpTransaction;
    const headers = this.#headers;
    this.#decoder = undefined;
    this.#spool = undefined;
    this.#headers = undefined;
    this.#complete(spool, decoder.size, decoder.overflow, decoder.bareLineEndings, headers).then(
      (r) => {
        this.#answer(tx, r);
        s.input.afterAsync();
      },
      (err) => {
        s.log.error({ err }, `end of data failed: ${describe(err)}`);
        this.#answer(tx, Replies.localError);
        s.input.afterAsync();
      },
    );
  }

  /**
   * Queue the final reply to `tx`'s message: one reply, or on an LMTP listener
   * one per accepted recipient, in RCPT order, each naming its recipient
   * (RFC 2033 4.2). The message's verdict is the same for every recipient, and
   * a refusal counts once toward `limits.maxErrors`.
   */
  #answer(tx: SmtpTransaction, r: Reply): void {
    const out = this.#session.output;
    if (this.#session.listener.protocol !== 'lmtp') {
      out.queue(r);
      return;
    }
    const [first = r, ...rest] = perRecipient(tx, r);
    out.queue(first);
    for (const mine of rest) out.queueUncounted(mine);
  }

  /**
   * The end of the message path, shared by DATA and chunked (BDAT) messages:
   * header transforms, `message` hook, `queue` hook. Returns the final reply
   * and ends the transaction.
   */
  async #complete(
    spool: SpoolWriter,
    size: number,
    overflow: boolean,
    bare: boolean,
    headers: HeaderLimits | undefined,
  ): Promise<Reply> {
    const s = this.#session;
    const host = s.host;
    const tx = s.transaction as SmtpTransaction;
    if (overflow) {
      await spool.discard();
      return this.#end(tx, size, Replies.messageTooBig);
    }
    const violation = headers?.violation;
    if (violation !== undefined) {
      await spool.discard();
      const r = violation === 'section-too-big' ? Replies.headerTooBig : Replies.headerFieldTooLong;
      return this.#end(tx, size, r);
    }
    // The fields the message arrived with: the Received field prepended below is not counted.
    if (headers !== undefined && headers.receivedFields > host.limits.maxReceivedHeaders) {
      await spool.discard();
      tx.log.debug({ received: headers.receivedFields }, 'mail loop suspected');
      return this.#end(tx, size, Replies.routingLoop);
    }
    if (bare && host.smtp.bareLineEndings === 'reject') {
      await spool.discard();
      return this.#end(tx, size, Replies.bareLineEnding);
    }
    let fields = [receivedHeader(tx, host.now())];
    if (host.hooks.headers.isUsed()) fields = await callWaterfall(host.hooks, 'headers', fields, tx);
    let message: SpooledMessage;
    try {
      message = await spool.finish(fields, bare);
    } catch (err) {
      tx.log.error({ err }, `spool failed: ${describe(err)}`);
      await spool.discard();
      return this.#end(tx, size, Replies.insufficientStorage);
    }
    let reply: Reply;
    let queueId: string | undefined;
    try {
      let verdict: Reply | undefined;
      if (host.hooks.message.isUsed()) verdict = await callBail(host.hooks, 'message', tx, message);
      if (verdict && !isPositive(verdict)) reply = verdict;
      else {
        const result = await callBail(host.hooks, 'queue', tx, message);
        if (result === undefined) {
          tx.log.error('no plugin queued the message (configure a queue plugin)');
          reply = Replies.localError;
        } else if (isReply(result)) reply = isPositive(result) ? Replies.localError : result;
        else {
          reply = queuedReply(result.id);
          queueId = result.id;
        }
      }
    } finally {
      const disposed = message.dispose();
      if (disposed) await disposed;
    }
    return this.#end(tx, size, reply, queueId);
  }

  /** The transaction ends with the message's final reply: logged, and reset unless the message was queued. */
  #end(tx: SmtpTransaction, size: number, r: Reply, queueId?: string): Reply | Promise<Reply> {
    const s = this.#session;
    s.transactionCount++;
    const traffic = s.host.traffic;
    if (queueId === undefined) traffic.refused++;
    else {
      traffic.messages++;
      traffic.bytes += size;
    }
    if (s.logs('info')) {
      s.log.info(
        {
          tid: tx.id,
          from: tx.from.address?.address ?? '',
          rcpts: tx.recipients.length,
          size,
          code: r.code,
          ...(queueId === undefined ? {} : { queueId }),
          ms: s.host.now() - tx.startedAt,
        },
        queueId === undefined ? 'message refused' : 'message queued',
      );
    }
    if (queueId !== undefined) {
      s.transaction = undefined;
      s.host.observers.transaction?.(tx, { outcome: 'queued', size });
      return r;
    }
    return s.resetTransaction('rejected', size).then(() => r);
  }

  // ---- chunked messages (the seam BDAT uses) ----------------------------

  /** A chunked message is open (DATA is refused until it ends). */
  get chunkedOpen(): boolean {
    return this.#chunked !== undefined;
  }

  /** The chunked-message seam, made when a verb first needs it (most sessions never do). */
  get chunks(): ChunkedMessage {
    this.#chunkApi ??= this.#makeChunkApi();
    return this.#chunkApi;
  }

  #makeChunkApi(): ChunkedMessage {
    const s = this.#session;
    return {
      begin: async () => {
        const tx = s.transaction;
        if (!tx) return s.helo ? Replies.needMail : s.helloFirst;
        if (tx.recipients.length === 0) return Replies.noValidRecipients;
        if (this.#chunked) return undefined;
        if (s.host.hooks.data.isUsed()) {
          const verdict = await callBail(s.host.hooks, 'data', tx);
          if (verdict && !isPositive(verdict)) return verdict;
        }
        this.#chunked = { spool: this.#newSpool(tx), overflow: false, tx };
        return undefined;
      },
      read: (size) => this.#readRaw(size),
      finish: async () => {
        const c = this.#chunked;
        if (!c || s.transaction !== c.tx) return Replies.badSequence;
        const headers = this.#headers;
        this.#chunked = undefined;
        this.#spool = undefined;
        this.#headers = undefined;
        let r: Reply;
        try {
          r = await this.#complete(c.spool, c.spool.size, c.overflow, false, headers);
        } catch (err) {
          s.log.error({ err }, `end of data failed: ${describe(err)}`);
          r = Replies.localError;
        }
        if (s.listener.protocol !== 'lmtp') return r;
        // LMTP: every recipient but the last is answered here; the verb handler's reply (the one
        // that counts toward maxErrors) is the last recipient's.
        const replies = perRecipient(c.tx, r);
        const last = replies.pop() ?? r;
        for (const mine of replies) s.output.queueUncounted(mine);
        return last;
      },
      abort: () => this.abortChunked(),
    };
  }

  /** Drop the open chunked message; the transaction stays open. */
  async abortChunked(): Promise<void> {
    const c = this.#chunked;
    this.#chunked = undefined;
    this.#spool = undefined;
    this.#headers = undefined;
    await c?.spool.discard();
  }

  /** Read exactly `size` raw octets: into the open chunked message, or discarded. */
  #readRaw(size: number): Promise<void> {
    const s = this.#session;
    const c = this.#chunked;
    let into: SpoolWriter | undefined;
    if (c && s.transaction === c.tx) {
      if (c.overflow || c.spool.size + size > s.host.limits.maxMessageSize) c.overflow = true;
      else into = c.spool;
    }
    return new Promise<void>((resolve) => {
      this.#raw = { remaining: size, into, done: resolve };
      s.state = 'raw';
      s.deadlines.armData(s.host.timeouts.data);
      const buffered = s.input.lines.take();
      if (buffered.length > 0) this.receiveRaw(buffered);
      else if (size === 0) this.receiveRaw(Buffer.alloc(0));
      else {
        s.input.resume();
        s.input.stopIfStarved();
      }
    });
  }

  receiveRaw(chunk: Buffer): void {
    const raw = this.#raw;
    if (!raw) return;
    const s = this.#session;
    const n = Math.min(raw.remaining, chunk.length);
    if (n > 0 && raw.into) {
      const octets = n === chunk.length ? chunk : chunk.subarray(0, n);
      this.#headers?.write(octets);
      this.#spoolWrite(raw.into, octets);
    }
    raw.remaining -= n;
    if (raw.remaining > 0) {
      // As in data mode: input paused while it piled up behind the command must flow again.
      s.input.resume();
      s.input.stopIfStarved();
      return;
    }
    this.#raw = undefined;
    s.state = 'command';
    s.deadlines.armCommand(s.host.timeouts.command);
    if (n < chunk.length) s.input.lines.push(chunk.subarray(n));
    raw.done();
  }

  /**
   * The connection closed: forget what was being received and return the
   * spool to discard. A chunk still being read can never complete: its verb
   * handler is let go (`finish` then refuses).
   */
  abandon(): SpoolWriter | undefined {
    const abandoned = this.#decoder !== undefined ? this.#spool : this.#chunked?.spool;
    this.#decoder = undefined;
    this.#spool = undefined;
    this.#headers = undefined;
    this.#chunked = undefined;
    const raw = this.#raw;
    this.#raw = undefined;
    raw?.done();
    return abandoned;
  }
}

/** LMTP (RFC 2033 4.2): `r` for each accepted recipient of `tx`, in RCPT order. */
function perRecipient(tx: SmtpTransaction, r: Reply): Reply[] {
  return tx.recipients.map((rcpt) => forRecipient(r, rcpt.address.address));
}

/** `r` as the reply for one LMTP recipient: the same code, its text prefixed with the address. */
function forRecipient(r: Reply, address: string): Reply {
  const lines = typeof r.text === 'string' ? [r.text] : r.text;
  const [first = '', ...rest] = lines;
  const text = `<${address}> ${first}`;
  return reply(r.code, r.enhanced, rest.length > 0 ? [text, ...rest] : text, r.disconnect === true);
}
