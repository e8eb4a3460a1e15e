import { describe, expect, it } from 'vitest';
import { messageRecord, RECORD_HEADER, releaseRecord, scanRecords } from './journal-record.ts';
import { envelopeFor } from './queue-file.ts';

const body = (n: number) => Buffer.from(`Subject: ${n}\r\n\r\nbody ${n}\r\n`);
const envelope = (id: string, b: Buffer) =>
  envelopeFor(
    id,
    {
      from: 'a@example.net',
      recipients: [{ address: 'b@example.com', domain: 'example.com', attributes: {} }],
      attributes: {},
      receivedAt: 0,
    },
    b.length,
  );

function journal(): { buf: Buffer; ends: number[] } {
  const parts: Buffer[] = [];
  const ends: number[] = [];
  let at = 0;
  const push = (bufs: Buffer[]) => {
    for (const b of bufs) {
      parts.push(b);
      at += b.length;
    }
    ends.push(at);
  };
  push(messageRecord(envelope('0000000000000001', body(1)), body(1)).buffers);
  push(messageRecord(envelope('0000000000000002', body(2)), body(2)).buffers);
  push(releaseRecord('0000000000000001'));
  return { buf: Buffer.concat(parts), ends };
}

describe('journal records', () => {
  it('reads back what was written, with the message octets where the record says', () => {
    const { buf } = journal();
    const first = messageRecord(envelope('0000000000000001', body(1)), body(1));
    const scan = scanRecords(buf);
    expect(scan.problem).toBeUndefined();
    expect(scan.validEnd).toBe(buf.length);
    expect(scan.entries.map((e) => e.type)).toEqual(['message', 'message', 'release']);
    const [m1, m2, r] = scan.entries;
    if (m1?.type !== 'message' || m2?.type !== 'message' || r?.type !== 'release') throw new Error('shape');
    expect(m1.bodyStart).toBe(first.bodyOffset);
    expect(buf.subarray(m1.bodyStart, m1.bodyEnd).equals(body(1))).toBe(true);
    expect(buf.subarray(m2.bodyStart, m2.bodyEnd).equals(body(2))).toBe(true);
    expect(m2.envelope.id).toBe('0000000000000002');
    expect(r.id).toBe('0000000000000001');
  });

  it('cut anywhere, yields exactly the whole records before the cut', () => {
    const { buf, ends } = journal();
    for (let cut = 0; cut < buf.length; cut++) {
      const scan = scanRecords(buf.subarray(0, cut));
      const whole = ends.filter((e) => e <= cut).length;
      expect(scan.entries).toHaveLength(whole);
      expect(scan.validEnd).toBe(whole === 0 ? 0 : ends[whole - 1]);
      expect(scan.problem === undefined).toBe(cut === scan.validEnd);
    }
  });

  it('takes zeros to the end as the clean end of a zero-filled segment, and zeros before a record as damage', () => {
    const { buf, ends } = journal();
    const clean = scanRecords(Buffer.concat([buf, Buffer.alloc(200_000)]));
    expect(clean.problem).toBeUndefined();
    expect(clean.entries).toHaveLength(3);
    expect(clean.validEnd).toBe(buf.length);

    // A torn write: the second record's tail never landed on the zeros.
    const torn = Buffer.concat([buf, Buffer.alloc(1000)]);
    torn.fill(0, (ends[1] as number) - 10, ends[1]);
    expect(scanRecords(torn).problem).toBe('checksum mismatch');

    // A gap of zeros with a record after it is not an end.
    const gap = Buffer.concat([buf.subarray(0, ends[0]), Buffer.alloc(64), buf.subarray(ends[0])]);
    const scan = scanRecords(gap);
    expect(scan.problem).toBe('no record marker');
    expect(scan.validEnd).toBe(ends[0]);
  });

  it('stops at a flipped bit in a payload, a header or the marker', () => {
    const { buf, ends } = journal();
    for (const at of [0, 5, 9, 13, RECORD_HEADER + 3, (ends[0] as number) + RECORD_HEADER + 40]) {
      const damaged = Buffer.from(buf);
      damaged[at] = (damaged[at] as number) ^ 0x10;
      const scan = scanRecords(damaged);
      expect(scan.problem).toBeDefined();
      expect(scan.validEnd).toBeLessThanOrEqual(at);
    }
  });
});
