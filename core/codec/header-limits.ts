/**
 * Header limits: watches the message octets as they pass to the spool and
 * flags a header section (RFC 5322 2.1) larger than `maxSectionSize` or one
 * header field, continuation lines included, longer than `maxFieldLength`.
 *
 * It keeps no message data, only counters and a small state, and works across
 * arbitrary chunk boundaries. The header section ends at the first empty line,
 * or at the first line that is neither a field (`name:`, RFC 5322 2.2; white
 * space before the colon is tolerated, as the obsolete syntax of 4.5 allows)
 * nor a continuation (starting with SP or HTAB): from there on the octets are
 * body, and each further chunk costs one comparison.
 *
 * A line ends at LF (a CR before it belongs to the line ending); DATA has
 * normalised line endings to CRLF already, BDAT passes octets as sent.
 * Sizes count every octet of the header lines, line endings included; the
 * section's size also counts the empty line that ends it. Which limit is
 * reported, when both are exceeded, and whether one is, do not depend on how
 * the octets were cut into chunks (the unit tests check this against a
 * line-by-line reading).
 *
 * It also counts the `Received` fields (RFC 5321 4.4: one per hop, so too many
 * means a mail loop, 6.3): a field whose name is `Received`, in any case, with
 * white space before the colon tolerated as above. Counting costs one
 * comparison per octet of a field name, and stops with the header section (or
 * at a limit exceeded: the message is refused for that anyway).
 */

/** Which limit was exceeded first. */
export type HeaderViolation = 'section-too-big' | 'field-too-long';

export interface HeaderLimitsOptions {
  /** Octets of the whole header section. */
  readonly maxSectionSize: number;
  /** Octets of one header field, continuation lines and line endings included. */
  readonly maxFieldLength: number;
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
/** `received`, lower case: compared with `octet | 0x20`, which folds ASCII letters only. */
const RECEIVED = Buffer.from('received', 'latin1');

/** At the start of a line. */
const LINE_START = 0;
/** A line started with CR: it is the empty line (or a malformed one); the body starts after it. */
const START_CR = 1;
/** Inside a field name. */
const NAME = 2;
/** White space after a field name, before the colon. */
const NAME_WSP = 3;
/** After the colon or inside a continuation line: everything up to LF. */
const VALUE = 4;
/** The header section is over (or a limit was exceeded): nothing more to watch. */
const DONE = 5;

export class HeaderLimits {
  readonly #maxSection: number;
  readonly #maxField: number;
  #state = LINE_START;
  /** Message octets seen before the current chunk (while the header section lasts). */
  #pos = 0;
  /** Offset where the current line began. */
  #lineStart = 0;
  /** Offset where the open field began; -1 when none is open. */
  #fieldStart = -1;
  /** Size of the header section, once it is over. */
  #section = -1;
  #violation: HeaderViolation | undefined;
  /** Octets of the open field's name that spell the start of `received`; -1 once they do not. */
  #nameMatch = -1;
  #received = 0;

  constructor(opts: HeaderLimitsOptions) {
    this.#maxSection = opts.maxSectionSize;
    this.#maxField = opts.maxFieldLength;
  }

  /** The limit that was exceeded, if any (the one exceeded at the earlier octet when both were). */
  get violation(): HeaderViolation | undefined {
    return this.#violation;
  }

  /** The header section is over (or a limit was exceeded): `write` does nothing more. */
  get done(): boolean {
    return this.#state === DONE;
  }

  /** Octets of the header section, the empty line after it included: final once `done`. */
  get sectionSize(): number {
    return this.#section >= 0 ? this.#section : this.#pos;
  }

  /** `Received` fields in the header section so far (final once `done`, unless a limit was exceeded). */
  get receivedFields(): number {
    return this.#received;
  }

  /** Feed the next message octets, in order. */
  write(chunk: Buffer): void {
    let state = this.#state;
    if (state === DONE) return;
    const base = this.#pos;
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (state === VALUE) {
        const lf = chunk.indexOf(LF, i);
        if (lf === -1) {
          i = n;
          break;
        }
        i = lf + 1;
        state = LINE_START;
        continue;
      }
      const b = chunk[i] as number;
      if (state === LINE_START) {
        const at = base + i;
        this.#lineStart = at;
        if (b === SP || b === HTAB) {
          // A continuation line only continues an open field; otherwise it is body.
          if (this.#fieldStart < 0) {
            this.#end(at, at);
            return;
          }
          state = VALUE;
        } else if (b > SP && b < 0x7f && b !== COLON) {
          // A new field begins: the open one is complete.
          if (this.#over(at, at)) return;
          this.#fieldStart = at;
          this.#nameMatch = (b | 0x20) === RECEIVED[0] ? 1 : -1;
          state = NAME;
        } else if (b === CR) {
          state = START_CR;
        } else if (b === LF) {
          // The empty line (bare LF).
          this.#end(at + 1, at);
          return;
        } else {
          // A line that is no header field: the body starts with it.
          this.#end(at, at);
          return;
        }
        i++;
      } else if (state === START_CR) {
        // CR LF ends the header section; a CR before anything else is taken as its end too.
        this.#end(b === LF ? base + i + 1 : base + i, this.#lineStart);
        return;
      } else {
        // NAME or NAME_WSP
        if (b === COLON) {
          if (this.#nameMatch === RECEIVED.length) this.#received++;
          state = VALUE;
        } else if (b === SP || b === HTAB) state = NAME_WSP;
        else if (state === NAME_WSP || b < SP || b >= 0x7f) {
          // Not a field after all: the header section ended before this line.
          this.#fieldStart = -1;
          this.#end(this.#lineStart, this.#lineStart);
          return;
        } else {
          const m = this.#nameMatch;
          if (m >= 0) this.#nameMatch = m < RECEIVED.length && (b | 0x20) === RECEIVED[m] ? m + 1 : -1;
        }
        i++;
      }
    }
    const at = base + n;
    // A name still being read may turn out to be body, and a CR at the start of a line is no
    // field's: each is judged with its line.
    if (state === NAME || state === NAME_WSP) {
      if (this.#over(this.#lineStart, this.#lineStart)) return;
    } else if (this.#over(at, state === START_CR ? this.#lineStart : at)) return;
    this.#pos = at;
    this.#state = state;
  }

  /**
   * Whether a limit is exceeded with the header section running to `sectionEnd`
   * and the open field to `fieldEnd`; records the violation and stops if so.
   */
  #over(sectionEnd: number, fieldEnd: number): boolean {
    const field = this.#fieldStart >= 0 && fieldEnd - this.#fieldStart > this.#maxField;
    const section = sectionEnd > this.#maxSection;
    if (!field && !section) return false;
    // Both: the one whose limit an earlier octet crossed.
    const fieldFirst = field && (!section || this.#fieldStart + this.#maxField < this.#maxSection);
    this.#violation = fieldFirst ? 'field-too-long' : 'section-too-big';
    this.#section = sectionEnd;
    this.#state = DONE;
    return true;
  }

  /** The header section ends at `sectionEnd`; the last field at `fieldEnd`. */
  #end(sectionEnd: number, fieldEnd: number): void {
    if (this.#over(sectionEnd, fieldEnd)) return;
    this.#section = sectionEnd;
    this.#state = DONE;
  }
}
