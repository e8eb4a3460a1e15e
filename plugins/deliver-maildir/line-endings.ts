/** CRLF to LF, across chunk boundaries (Maildir files traditionally use LF). A lone CR is kept. */
export async function* crlfToLf(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let heldCr = false;
  for await (const chunk of source) {
    if (chunk.length === 0) continue;
    const parts: Buffer[] = [];
    let start = 0;
    if (heldCr) {
      if (chunk[0] !== 0x0a) parts.push(CR);
      heldCr = false;
    }
    for (let cr = chunk.indexOf(0x0d); cr >= 0; cr = chunk.indexOf(0x0d, cr + 1)) {
      if (cr === chunk.length - 1) {
        parts.push(chunk.subarray(start, cr));
        start = chunk.length;
        heldCr = true;
      } else if (chunk[cr + 1] === 0x0a) {
        parts.push(chunk.subarray(start, cr));
        start = cr + 1;
      }
    }
    if (start < chunk.length) parts.push(chunk.subarray(start));
    const out = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
    if (out.length > 0) yield out;
  }
  if (heldCr) yield CR;
}

const CR = Buffer.from('\r');
