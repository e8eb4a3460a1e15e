/** The DSN parameter parsers (RFC 3461 section 4, RFC 6533 section 3). */
import { describe, expect, it } from 'vitest';
import { parseEnvid, parseNotify, parseOrcpt, parseRet } from './params.ts';

describe('DSN parameters', () => {
  it('RET is FULL or HDRS in any case', () => {
    expect(parseRet('FULL')).toBe('FULL');
    expect(parseRet('hdrs')).toBe('HDRS');
    expect(parseRet('HEADERS')).toBeUndefined();
  });

  it('ENVID is xtext of at most 100 characters decoding to printable ASCII', () => {
    expect(parseEnvid('QQ314159')).toBe('QQ314159');
    expect(parseEnvid('a+2Bb+3D+20')).toBe('a+b= ');
    expect(parseEnvid('x'.repeat(100))).toBe('x'.repeat(100));
    expect(parseEnvid('x'.repeat(101))).toBeUndefined();
    expect(parseEnvid('a+2b')).toBeUndefined();
    expect(parseEnvid('a+0D+0A')).toBeUndefined();
    expect(parseEnvid('a+C3+A9')).toBeUndefined();
  });

  it('NOTIFY is NEVER alone or a list of SUCCESS, FAILURE, DELAY without repeats', () => {
    expect(parseNotify('never')).toEqual(['NEVER']);
    expect(parseNotify('DELAY,success')).toEqual(['DELAY', 'SUCCESS']);
    expect(parseNotify('SUCCESS,FAILURE,DELAY')).toEqual(['SUCCESS', 'FAILURE', 'DELAY']);
    for (const bad of ['NEVER,DELAY', 'SUCCESS,SUCCESS', '', ',', 'SUCCESS,', 'ALWAYS']) {
      expect(parseNotify(bad), bad).toBeUndefined();
    }
  });

  it('ORCPT is addr-type;xtext with a printable ASCII rfc822 address', () => {
    expect(parseOrcpt('rfc822;bob@example.com', false)).toEqual({
      type: 'rfc822',
      address: 'bob@example.com',
    });
    expect(parseOrcpt('RFC822;a+2Bb@example.com', false)).toEqual({
      type: 'rfc822',
      address: 'a+b@example.com',
    });
    expect(parseOrcpt('x400;c+3Dus;a+3Dx', false)).toEqual({ type: 'x400', address: 'c=us;a=x' });
    for (const bad of ['bob@example.com', ';bob@example.com', 'rfc822;', 'rfc 822;x', 'rfc822;a+0Ab']) {
      expect(parseOrcpt(bad, false), bad).toBeUndefined();
    }
    expect(parseOrcpt(`rfc822;${'x'.repeat(493)}`, false)).toBeDefined();
    expect(parseOrcpt(`rfc822;${'x'.repeat(493)}y`, false)).toBeUndefined();
  });

  it('a utf-8 ORCPT decodes \\x{HEX}, and takes raw UTF-8 only in an SMTPUTF8 transaction', () => {
    expect(parseOrcpt('utf-8;j\\x{F6}rg@example.com', false)).toEqual({
      type: 'utf-8',
      address: 'j\u00f6rg@example.com',
    });
    expect(parseOrcpt('utf-8;\\x{1F600}@example.com', false)?.address).toBe('\u{1F600}@example.com');
    expect(parseOrcpt('utf-8;j\u00f6rg@example.com', true)?.address).toBe('j\u00f6rg@example.com');
    expect(parseOrcpt('utf-8;j\u00f6rg@example.com', false)).toBeUndefined();
    expect(parseOrcpt('utf-8;\\x{D800}@example.com', false)).toBeUndefined();
    expect(parseOrcpt('utf-8;\\x{110000}@example.com', false)).toBeUndefined();
    expect(parseOrcpt('utf-8;\\x{0A}@example.com', false)).toBeUndefined();
  });
});
