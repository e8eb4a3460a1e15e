/** The BDAT argument parser (RFC 3030 section 2). */
import { describe, expect, it } from 'vitest';
import { parseBdatArgument } from './bdat-argument.ts';

describe('parseBdatArgument', () => {
  it('reads a size and the LAST marker', () => {
    expect(parseBdatArgument('0')).toEqual({ kind: 'ok', size: 0, last: false });
    expect(parseBdatArgument('1024')).toEqual({ kind: 'ok', size: 1024, last: false });
    expect(parseBdatArgument('12 LAST')).toEqual({ kind: 'ok', size: 12, last: true });
    expect(parseBdatArgument('12 last')).toEqual({ kind: 'ok', size: 12, last: true });
    expect(parseBdatArgument(' 7  LAST ')).toEqual({ kind: 'ok', size: 7, last: true });
    expect(parseBdatArgument('9007199254740991')).toEqual({ kind: 'ok', size: 2 ** 53 - 1, last: false });
  });

  it('keeps the size when only the marker is wrong, so the chunk can be skipped', () => {
    expect(parseBdatArgument('12 LASTX')).toEqual({ kind: 'bad-marker', size: 12 });
    expect(parseBdatArgument('12 LAST extra')).toEqual({ kind: 'bad-marker', size: 12 });
    expect(parseBdatArgument('12 FIRST')).toEqual({ kind: 'bad-marker', size: 12 });
  });

  it('has no size for anything that is not 1 to 16 digits within 2^53 - 1', () => {
    for (const arg of [
      '',
      'LAST',
      '-1',
      '+1',
      '1.5',
      '0x10',
      '12abc',
      '9007199254740992',
      '12345678901234567',
    ]) {
      expect(parseBdatArgument(arg), arg).toEqual({ kind: 'no-size' });
    }
  });
});
