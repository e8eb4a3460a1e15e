/**
 * rspamd's HTTP protocol, the one request the plugin makes: `POST /checkv2`
 * with the envelope in request header fields and the message, streamed, as
 * the body; the answer is a JSON object (`action`, `score`,
 * `required_score`, `symbols`, ...). One deadline covers the whole exchange.
 */
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';

/** A symbol of rspamd's answer. */
export interface RspamdSymbol {
  readonly name: string;
  readonly score: number;
  readonly options?: readonly string[];
}

/** The parts of a `/checkv2` answer the plugin uses. */
export interface RspamdAnswer {
  /** `reject`, `soft reject`, `rewrite subject`, `add header`, `greylist`, `no action` (or another configured action). */
  readonly action: string;
  readonly score: number;
  readonly requiredScore: number;
  readonly symbols: readonly RspamdSymbol[];
}

export interface CheckRequest {
  /** Base URL of the scanner (normal worker or proxy), e.g. `http://127.0.0.1:11333`. */
  readonly url: URL;
  readonly headers: OutgoingHttpHeaders;
  /** Octets of the body. */
  readonly size: number;
  readonly body: () => Readable;
  /** Milliseconds for the whole exchange. */
  readonly timeout: number;
}

/** An answer larger than this is not rspamd's (a few KiB is usual). */
const MAX_ANSWER = 4 * 1024 * 1024;

export class RspamdError extends Error {
  readonly kind: 'timeout' | 'unreachable' | 'http' | 'answer';
  constructor(kind: RspamdError['kind'], message: string) {
    super(message);
    this.kind = kind;
  }
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** Read a `/checkv2` JSON answer; throws `RspamdError('answer')` when it is not one. */
export function parseAnswer(text: string): RspamdAnswer {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new RspamdError('answer', 'rspamd answered with something that is not JSON');
  }
  if (typeof doc !== 'object' || doc === null)
    throw new RspamdError('answer', 'rspamd answer is not an object');
  const d = doc as Record<string, unknown>;
  const action = d['action'];
  const score = num(d['score']);
  if (typeof action !== 'string' || score === undefined)
    throw new RspamdError('answer', 'rspamd answer has no action or score');
  const symbols: RspamdSymbol[] = [];
  const raw = d['symbols'];
  if (typeof raw === 'object' && raw !== null) {
    for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
      const s = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
      const options = Array.isArray(s['options'])
        ? (s['options'] as unknown[]).filter((o): o is string => typeof o === 'string')
        : undefined;
      symbols.push({
        name: typeof s['name'] === 'string' ? s['name'] : key,
        score: num(s['score']) ?? 0,
        ...(options && options.length > 0 ? { options } : {}),
      });
    }
  }
  return { action, score, requiredScore: num(d['required_score']) ?? 0, symbols };
}

/** POST the message to `/checkv2`. Rejects with an `RspamdError` on a timeout, an outage or a bad answer. */
export function checkV2(req: CheckRequest): Promise<RspamdAnswer> {
  return new Promise((resolve, reject) => {
    const target = new URL('checkv2', req.url.href.endsWith('/') ? req.url : `${req.url.href}/`);
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    let settled = false;
    const finish = (err: RspamdError | undefined, answer?: RspamdAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      body.destroy();
      if (err) {
        http.destroy();
        reject(err);
      } else resolve(answer as RspamdAnswer);
    };
    // The message goes out as it is read from the spool: never whole in memory.
    const body = req.body();
    const http = send(target, {
      method: 'POST',
      headers: { ...req.headers, 'content-length': String(req.size) },
    });
    const timer = setTimeout(
      () => finish(new RspamdError('timeout', `rspamd did not answer within ${req.timeout} ms`)),
      req.timeout,
    );
    http.on('error', (err) => finish(new RspamdError('unreachable', `rspamd: ${err.message}`)));
    http.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_ANSWER) finish(new RspamdError('answer', 'rspamd answer too large'));
        else chunks.push(chunk);
      });
      res.on('error', (err) => finish(new RspamdError('unreachable', `rspamd: ${err.message}`)));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) {
          finish(new RspamdError('http', `rspamd answered HTTP ${res.statusCode}: ${errorText(text)}`));
          return;
        }
        try {
          finish(undefined, parseAnswer(text));
        } catch (err) {
          finish(err as RspamdError);
        }
      });
    });
    body.on('error', (err) => finish(new RspamdError('unreachable', `reading the message: ${err.message}`)));
    body.pipe(http);
  });
}

/** The start of an error answer, printable, for the log. */
function errorText(text: string): string {
  return text.slice(0, 200).replace(/[^\x20-\x7e]/g, ' ') || 'no text';
}
