/**
 * What a fuzz session is: the listener it talks to and a list of steps, plus
 * a readable rendering of it for reproducers.
 */

/** The listeners of the fuzz server (see server.ts). */
export const LISTENERS = ['mx', 'submission', 'submissions', 'proxy'] as const;
export type ListenerName = (typeof LISTENERS)[number];

export type Step =
  /** Write these bytes. */
  | { readonly op: 'send'; readonly data: Buffer }
  /** Wait (a bounded time) for the next complete reply; none coming is not a fault by itself. */
  | { readonly op: 'reply' }
  /** Start a TLS client handshake on the connection (after STARTTLS, or at once on implicit TLS). */
  | { readonly op: 'tls' }
  /** Disconnect early: half-close (`end`) or reset (`destroy`). */
  | { readonly op: 'close'; readonly how: 'end' | 'destroy' };

export interface Session {
  /** Its number in the run: with the seed, all that is needed to make it again. */
  readonly index: number;
  readonly listener: ListenerName;
  /** The mutations applied to the generated valid session, for the reader of a reproducer. */
  readonly mutations: readonly string[];
  readonly steps: readonly Step[];
}

const SHOWN = 240;

/** Bytes as a quoted string with escapes, shortened in the middle when long. */
export function showBytes(data: Buffer): string {
  const text = (b: Buffer) =>
    JSON.stringify(b.toString('latin1')).replace(
      /[\u0080-\u00ff]/g,
      (c) => `\\x${c.charCodeAt(0).toString(16)}`,
    );
  if (data.length <= SHOWN) return text(data);
  const head = data.subarray(0, SHOWN / 2);
  const tail = data.subarray(data.length - SHOWN / 4);
  return `${text(head)} …(${data.length - head.length - tail.length} more octets)… ${text(tail)}`;
}

/** The session as lines a person can read and replay by hand. */
export function showSession(s: Session): string {
  const lines = [
    `session ${s.index} on listener ${s.listener}; mutations: ${s.mutations.join(', ') || 'none'}`,
  ];
  for (const step of s.steps) {
    if (step.op === 'send') lines.push(`  send ${showBytes(step.data)}`);
    else if (step.op === 'close') lines.push(`  close (${step.how})`);
    else lines.push(`  ${step.op}`);
  }
  return lines.join('\n');
}
