/** The names DNS lists and reverse DNS are asked under (RFC 5782 2.1, 2.4; RFC 3596 2.5). */
import { describe, expect, it } from 'vitest';
import { reverseDnsName, reversedAddress, sameAddress } from '../../plugins/dnsbl/lists.ts';

describe('DNS list names', () => {
  it('reverses IPv4 octets, and IPv4-mapped IPv6 addresses as IPv4', () => {
    expect(reversedAddress('192.0.2.99')).toBe('99.2.0.192');
    expect(reversedAddress('::ffff:192.0.2.99')).toBe('99.2.0.192');
    expect(sameAddress('::ffff:127.0.0.5', '127.0.0.5')).toBe(true);
    expect(reverseDnsName('192.0.2.99')).toBe('99.2.0.192.in-addr.arpa');
  });

  it('reverses the 32 nibbles of an IPv6 address, compressed or not', () => {
    // RFC 5782 2.4's example.
    expect(reversedAddress('2001:db8:1:2:3:4:567:89ab')).toBe(
      'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2',
    );
    expect(reversedAddress('2001:DB8::1')).toBe(
      '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2',
    );
    expect(reversedAddress('::1')).toBe(`1${'.0'.repeat(31)}`);
    expect(reversedAddress('::')).toBe(`0${'.0'.repeat(31)}`);
    expect(reversedAddress('fe80::1%eth0')).toBe(`1${'.0'.repeat(27)}.0.8.e.f`);
    expect(reversedAddress('64:ff9b::192.0.2.1')).toBe(
      '1.0.2.0.0.0.0.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.b.9.f.f.4.6.0.0',
    );
    expect(reverseDnsName('2001:db8::1')).toMatch(/\.8\.b\.d\.0\.1\.0\.0\.2\.ip6\.arpa$/);
  });

  it('refuses what is not an address, and compares addresses in full', () => {
    expect(reversedAddress('mail.example')).toBeUndefined();
    expect(reversedAddress('1.2.3')).toBeUndefined();
    expect(sameAddress('2001:db8::1', '2001:0db8:0:0::0001')).toBe(true);
    expect(sameAddress('::ffff:192.0.2.1', '192.0.2.1')).toBe(true);
    expect(sameAddress('2001:db8::1', '2001:db8::2')).toBe(false);
  });
});
