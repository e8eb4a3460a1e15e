import { describe, expect, it } from 'vitest';
import { type LineEvent, LineReader } from '../../core/codec/line-reader.ts';

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

function drain(reader: LineReader): LineEvent[] {
  const events: LineEvent[] = [];
  for (let e = reader.next(); e !== undefined; e = reader.next()) events.push(e);
  return events;
}

const line = (text: string): LineEvent => ({ kind: 'line', line: text });
const TOO_LONG: LineEvent = { kind: 'too-long' };

describe('LineReader framing', () => {
  it('returns nothing until a line is complete', () => {
    const r = new LineReader(512);
    r.push(bytes('EHLO exa'));
    expect(r.hasLine).toBe(false);
    expect(r.next()).toBeUndefined();
    expect(r.buffered).toBe(8);
    r.push(bytes('mple.com\r\n'));
    expect(r.hasLine).toBe(true);
    expect(drain(r)).toEqual([line('EHLO example.com')]);
    expect(r.buffered).toBe(0);
    expect(r.hasLine).toBe(false);
  });

  it('strips CR before LF and tolerates bare LF', () => {
    const r = new LineReader(512);
    r.push(bytes('NOOP\r\nRSET\nQUIT\r\n'));
    expect(drain(r)).toEqual([line('NOOP'), line('RSET'), line('QUIT')]);
  });

  it('keeps a CR that is not right before the LF', () => {
    const r = new LineReader(512);
    r.push(bytes('A\rB\r\r\n\r\n'));
    expect(drain(r)).toEqual([line('A\rB\r'), line('')]);
  });

  it('returns several lines from one chunk', () => {
    const r = new LineReader(512);
    r.push(bytes('MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n'));
    expect(drain(r)).toEqual([
      line('MAIL FROM:<a@b>'),
      line('RCPT TO:<c@d>'),
      line('RCPT TO:<e@f>'),
      line('DATA'),
    ]);
  });

  it('joins a line split across chunks, at every split point', () => {
    const text = 'RCPT TO:<someone@example.org>\r\nNOOP\r\n';
    for (let a = 0; a <= text.length; a++) {
      for (let b = a; b <= text.length; b++) {
        const r = new LineReader(512);
        const events: LineEvent[] = [];
        for (const piece of [text.slice(0, a), text.slice(a, b), text.slice(b)]) {
          r.push(bytes(piece));
          events.push(...drain(r));
        }
        expect(events).toEqual([line('RCPT TO:<someone@example.org>'), line('NOOP')]);
        expect(r.buffered).toBe(0);
      }
    }
  });

  it('joins a line spread over many chunks, byte by byte', () => {
    const r = new LineReader(512);
    const events: LineEvent[] = [];
    for (const c of 'HELO x\r\nHELO y\r\n') {
      r.push(bytes(c));
      events.push(...drain(r));
    }
    expect(events).toEqual([line('HELO x'), line('HELO y')]);
  });

  it('decodes UTF-8, also when a character is split across chunks', () => {
    const data = Buffer.from('MAIL FROM:<jörg@exämple.de>\r\n', 'utf8');
    const at = data.indexOf(0xc3) + 1;
    const r = new LineReader(512);
    r.push(data.subarray(0, at));
    r.push(data.subarray(at));
    expect(drain(r)).toEqual([line('MAIL FROM:<jörg@exämple.de>')]);
  });
});

describe('LineReader limit', () => {
  it('accepts a line of exactly maxLength octets including CRLF', () => {
    const r = new LineReader(512);
    r.push(bytes('a'.repeat(510) + '\r\n'));
    expect(drain(r)).toEqual([line('a'.repeat(510))]);
  });

  it('accepts exactly maxLength when the line spans chunks', () => {
    const r = new LineReader(512);
    r.push(bytes('a'.repeat(300)));
    expect(r.next()).toBeUndefined();
    r.push(bytes('a'.repeat(210) + '\r'));
    expect(r.next()).toBeUndefined();
    r.push(bytes('\nNOOP\r\n'));
    expect(drain(r)).toEqual([line('a'.repeat(510)), line('NOOP')]);
  });

  it('reports maxLength + 1 as too long and continues with the next line', () => {
    const r = new LineReader(512);
    r.push(bytes('a'.repeat(511) + '\r\nNOOP\r\n'));
    expect(drain(r)).toEqual([TOO_LONG, line('NOOP')]);
  });

  it('reports maxLength + 1 as too long when it spans chunks', () => {
    const r = new LineReader(512);
    r.push(bytes('a'.repeat(300)));
    expect(r.next()).toBeUndefined();
    r.push(bytes('a'.repeat(211) + '\r'));
    expect(r.next()).toBeUndefined();
    r.push(bytes('\nNOOP\r\n'));
    expect(drain(r)).toEqual([TOO_LONG, line('NOOP')]);
  });

  it('discards an over-long partial line and reports it once its LF arrives', () => {
    const r = new LineReader(16);
    r.push(bytes('NOOP\r\n' + 'x'.repeat(20)));
    expect(drain(r)).toEqual([line('NOOP')]);
    expect(r.buffered).toBe(0);
    expect(r.hasLine).toBe(false);
    r.push(bytes('yyyy'));
    expect(r.buffered).toBe(0);
    expect(r.next()).toBeUndefined();
    r.push(bytes('zz\r\nRSET\r\nQU'));
    expect(r.hasLine).toBe(true);
    expect(drain(r)).toEqual([TOO_LONG, line('RSET')]);
    r.push(bytes('IT\r\n'));
    expect(drain(r)).toEqual([line('QUIT')]);
  });

  it('reports the too-long event when the LF arrives alone', () => {
    const r = new LineReader(8);
    r.push(bytes('x'.repeat(9)));
    expect(r.next()).toBeUndefined();
    r.push(bytes('\n'));
    expect(drain(r)).toEqual([TOO_LONG]);
    expect(r.buffered).toBe(0);
  });

  it('stays bounded on 10 MB without LF', () => {
    const max = 512;
    const r = new LineReader(max);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let pushed = 0;
    let highest = 0;
    r.push(chunk);
    pushed += chunk.length;
    expect(r.next()).toBeUndefined();
    while (pushed < 10 * 1024 * 1024) {
      r.push(chunk);
      pushed += chunk.length;
      highest = Math.max(highest, r.buffered);
      expect(r.next()).toBeUndefined();
      highest = Math.max(highest, r.buffered);
    }
    expect(highest).toBeLessThanOrEqual(max);
    r.push(bytes('\r\nQUIT\r\n'));
    expect(drain(r)).toEqual([TOO_LONG, line('QUIT')]);
  });

  it('stays bounded on 10 MB without LF fed in small pieces', () => {
    const max = 512;
    const r = new LineReader(max);
    const piece = Buffer.alloc(100, 0x61);
    let afterPush = 0;
    let afterNext = 0;
    let events = 0;
    for (let k = 0; k < 10 * 1024 * 1024; k += piece.length) {
      r.push(piece);
      afterPush = Math.max(afterPush, r.buffered);
      if (r.next() !== undefined) events++;
      afterNext = Math.max(afterNext, r.buffered);
    }
    expect(events).toBe(0);
    expect(afterPush).toBeLessThan(max + piece.length);
    expect(afterNext).toBeLessThan(max);
  });

  it('can raise the limit at runtime', () => {
    const r = new LineReader(512);
    r.maxLength = 2048;
    expect(r.maxLength).toBe(2048);
    r.push(bytes('a'.repeat(1000) + '\r\n'));
    expect(drain(r)).toEqual([line('a'.repeat(1000))]);
  });

  it('rejects a nonsensical limit', () => {
    expect(() => new LineReader(0)).toThrow(RangeError);
    expect(() => new LineReader(Number.NaN)).toThrow(RangeError);
  });
});

describe('LineReader take and clear', () => {
  it('take returns the unread bytes after the DATA line', () => {
    const r = new LineReader(512);
    r.push(bytes('DATA\r\nSubject: x\r\n'));
    r.push(bytes('\r\nbody'));
    expect(r.next()).toEqual(line('DATA'));
    expect(r.take().toString()).toBe('Subject: x\r\n\r\nbody');
    expect(r.buffered).toBe(0);
  });

  it('take hands a pipelined BDAT chunk over intact, even past maxLength', () => {
    const r = new LineReader(16);
    const payload = 'p'.repeat(100);
    r.push(bytes('BDAT 100 LAST\r\n' + payload.slice(0, 40)));
    expect(r.next()).toEqual(line('BDAT 100 LAST'));
    r.push(bytes(payload.slice(40)));
    expect(r.buffered).toBe(100);
    expect(r.take().toString()).toBe(payload);
    expect(r.buffered).toBe(0);
    expect(r.next()).toBeUndefined();
  });

  it('take returns a slice without copying when one chunk is buffered', () => {
    const r = new LineReader(512);
    const data = bytes('DATA\r\nhello');
    r.push(data);
    r.next();
    const rest = r.take();
    expect(rest.toString()).toBe('hello');
    expect(rest.buffer).toBe(data.buffer);
    expect(r.take()).toHaveLength(0);
  });

  it('take after partial consumption of several chunks', () => {
    const r = new LineReader(512);
    r.push(bytes('DA'));
    r.push(bytes('TA\r\nab'));
    r.push(bytes('cd'));
    expect(r.next()).toEqual(line('DATA'));
    expect(r.take().toString()).toBe('abcd');
  });

  it('clear drops everything, including a pending too-long state', () => {
    const r = new LineReader(8);
    r.push(bytes('STARTTLS\r\nMAIL FROM:<injected@x>\r\n'));
    expect(r.next()).toEqual(TOO_LONG);
    r.clear();
    expect(r.buffered).toBe(0);
    expect(r.hasLine).toBe(false);
    expect(r.next()).toBeUndefined();

    r.push(bytes('x'.repeat(20)));
    expect(r.next()).toBeUndefined();
    r.clear();
    r.push(bytes('EHLO\r\n'));
    expect(drain(r)).toEqual([line('EHLO')]);
  });

  it('reports the octets and the line ending of the last line, in one chunk and across chunks', () => {
    const r = new LineReader(512);
    r.push(bytes('NOOP\r\nQUIT\nhe'));
    r.push(bytes('llo\r'));
    r.push(bytes('\nx\n'));
    expect(r.next()).toEqual(line('NOOP'));
    expect([r.lastOctets, r.lastBare]).toEqual([6, false]);
    expect(r.next()).toEqual(line('QUIT'));
    expect([r.lastOctets, r.lastBare]).toEqual([5, true]);
    expect(r.next()).toEqual(line('hello'));
    expect([r.lastOctets, r.lastBare]).toEqual([7, false]);
    expect(r.next()).toEqual(line('x'));
    expect([r.lastOctets, r.lastBare]).toEqual([2, true]);
  });
});
