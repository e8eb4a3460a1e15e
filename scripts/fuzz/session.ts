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
function showBytes(data: Buffer): string {
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

function showStep(step: Step): string {
  if (step.op === 'send') return `send ${showBytes(step.data)}`;
  if (step.op === 'close') return `close (${step.how})`;
  return step.op;
}

/** Steps shown before the rest of a long session is summarised. */
const MAX_LINES = 80;

/** The session as lines a person can read (repeated step pairs folded), and the way to replay it exactly. */
export function showSession(s: Session): string {
  const steps = s.steps.map(showStep);
  const lines = [
    `session ${s.index} on listener ${s.listener}; mutations: ${s.mutations.join(', ') || 'none'}`,
  ];
  let i = 0;
  while (i < steps.length) {
    if (lines.length > MAX_LINES) {
      lines.push(`  … ${steps.length - i} more steps`);
      break;
    }
    // Fold a run of the same one or two steps (e.g. `send X`, `reply` repeated).
    let folded = false;
    for (const width of [1, 2]) {
      let times = 1;
      const same = (k: number) => steps.slice(i, i + width).every((v, j) => steps[k + j] === v);
      while (i + (times + 1) * width <= steps.length && same(i + times * width)) times++;
      if (times >= 3) {
        lines.push(`  ${times} times: ${steps.slice(i, i + width).join('; ')}`);
        i += times * width;
        folded = true;
        break;
      }
    }
    if (!folded) lines.push(`  ${steps[i++]}`);
  }
  return lines.join('\n');
}
