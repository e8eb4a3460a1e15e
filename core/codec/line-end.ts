/**
 * Finds the next CR or LF in a chunk: a byte loop for short distances (most
 * lines are short), native `indexOf` beyond. Each native result is kept until
 * the scan passes it, so a chunk is searched natively at most once per byte
 * value, never quadratically. Shared by the DATA decoder and the dot-stuffer.
 */
const CR = 0x0d;
const LF = 0x0a;
/** Bytes checked one by one before switching to native search. */
const SHORT_SCAN = 96;

export class LineEndScanner {
  #cr = -1;
  #lf = -1;

  /** Call before scanning a new chunk. */
  reset(): void {
    this.#cr = -1;
    this.#lf = -1;
  }

  /** Index of the first CR or LF in `chunk[i..n)`, or `n` if there is none. */
  find(chunk: Buffer, i: number, n: number): number {
    let p = i;
    const stop = n - i > SHORT_SCAN ? i + SHORT_SCAN : n;
    while (p < stop) {
      const b = chunk[p];
      if (b === CR || b === LF) return p;
      p++;
    }
    if (p === n) return n;
    if (this.#cr < p) {
      const c = chunk.indexOf(CR, p);
      this.#cr = c === -1 ? n : c;
    }
    if (this.#lf < p) {
      const l = chunk.indexOf(LF, p);
      this.#lf = l === -1 ? n : l;
    }
    return Math.min(this.#cr, this.#lf);
  }
}
