/** A pino logger for tests whose JSON lines land in an array, parsed. */
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

/** One parsed log line; tests narrow it with the fields they read. */
export interface LogLine {
  readonly msg: string;
  readonly [key: string]: unknown;
}

/** A logger at `info` whose lines land in `lines`. */
export function captureLog<L extends { readonly msg: string } = LogLine>(): { lines: L[]; logger: Logger } {
  const lines: L[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as L);
      done();
    },
  });
  return { lines, logger: pino({ level: 'info' }, sink) };
}
