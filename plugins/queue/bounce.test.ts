import { describe, expect, it } from 'vitest';
import { buildDsn, headerSection, statusOf } from './bounce.ts';
import { notifyOf, orcptOf } from './dsn-request.ts';

describe('DSN builder', () => {
  it('uses the RFC 6533 types for UTF-8 addresses', () => {
    const dsn = buildDsn({
      reportingMta: 'mx.example.org',
      to: 'jörg@example.de',
      arrivalDate: 0,
      queueId: 'q1',
      recipients: [{ address: 'δοκιμή@example.gr', action: 'failed', status: '5.1.1' }],
      returned: { kind: 'headers', headers: Buffer.from('Subject: Grüße\r\n') },
      date: 0,
      boundary: 'B',
    });
    const text = dsn.message.toString('utf8');
    expect(dsn.utf8).toBe(true);
    expect(dsn.eightBit).toBe(true);
    expect(text).toContain('Content-Type: message/global-delivery-status');
    expect(text).toContain('Final-Recipient: utf-8; δοκιμή@example.gr');
    expect(text).toContain('Content-Type: message/global-headers');
    expect(text.endsWith('\r\n--B--\r\n')).toBe(true);
  });

  it('keeps an ASCII report 7-bit', () => {
    const dsn = buildDsn({
      reportingMta: 'mx.example.org',
      to: 'a@example.net',
      arrivalDate: 0,
      queueId: 'q1',
      recipients: [{ address: 'b@example.com', action: 'failed', status: '5.0.0' }],
      returned: undefined,
      date: 0,
    });
    expect(dsn.eightBit).toBe(false);
    expect(dsn.utf8).toBe(false);
    expect(dsn.message.toString()).toContain('Content-Type: message/delivery-status');
  });

  it('derives status codes and header sections', () => {
    expect(statusOf({ code: 550, enhanced: '5.7.1', text: 'x' }, '5.0.0')).toBe('5.7.1');
    expect(statusOf({ code: 452, text: 'x' }, '5.0.0')).toBe('4.0.0');
    expect(statusOf(undefined, '5.0.0')).toBe('5.0.0');
    expect(headerSection(Buffer.from('A: 1\r\nB: 2\r\n\r\nbody\r\n')).toString()).toBe('A: 1\r\nB: 2\r\n');
  });

  it('reads NOTIFY and ORCPT as a DSN plugin records them', () => {
    expect(notifyOf({})).toEqual({ success: false, failure: true, delay: true, explicit: false });
    expect(notifyOf({ dsn: { notify: ['NEVER'] } } as object)).toMatchObject({
      failure: false,
      delay: false,
    });
    expect(notifyOf({ dsn: { notify: ['SUCCESS'] } } as object)).toMatchObject({
      success: true,
      failure: false,
    });
    // Only the recorded shape counts; a malformed value is dropped, not guessed at.
    expect(orcptOf({ dsn: { orcpt: 'rfc822;a+2Bb@example.com' } } as object)).toBeUndefined();
    expect(notifyOf({ dsn: { notify: ['NEVER', 'SUCCESS'] } } as object).explicit).toBe(false);
    expect(orcptOf({ dsn: { orcpt: { type: 'rfc822', address: 'x@y' } } } as object)).toEqual({
      type: 'rfc822',
      address: 'x@y',
    });
  });
});
