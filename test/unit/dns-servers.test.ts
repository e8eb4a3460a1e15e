import { describe, expect, it } from 'vitest';
import { formatNameServer, parseNameServer } from '../../core/dns/servers.ts';

describe('dns.servers entries', () => {
  it('reads addresses with and without ports, IPv4 and IPv6', () => {
    expect(parseNameServer('192.0.2.53')).toEqual({ host: '192.0.2.53', port: 53 });
    expect(parseNameServer('127.0.0.1:5353')).toEqual({ host: '127.0.0.1', port: 5353 });
    expect(parseNameServer('::1')).toEqual({ host: '::1', port: 53 });
    expect(parseNameServer('[::1]:53')).toEqual({ host: '::1', port: 53 });
    expect(parseNameServer('[2001:DB8:0::53]:5353')).toEqual({ host: '2001:db8::53', port: 5353 });
    expect(parseNameServer('2001:db8::53')).toEqual({ host: '2001:db8::53', port: 53 });
  });

  it('refuses names, bad addresses and bad ports', () => {
    for (const bad of [
      'dns.example',
      '999.1.1.1',
      '127.0.0.1:0',
      '127.0.0.1:70000',
      '[127.0.0.1]:53',
      '[::1',
      '',
    ]) {
      expect(parseNameServer(bad), bad).toBeUndefined();
    }
  });

  it('formats them back', () => {
    expect(formatNameServer({ host: '::1', port: 53 })).toBe('[::1]:53');
    expect(formatNameServer({ host: '127.0.0.1', port: 5353 })).toBe('127.0.0.1:5353');
  });
});
