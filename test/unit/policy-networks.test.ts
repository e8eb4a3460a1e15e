/** Client networks as greylisting and rate limits key them: IPv4 /24, IPv6 /64, other prefixes, lists. */
import { describe, expect, it } from 'vitest';
import { clientNetwork, networkMatcher } from '../../plugins/policy/networks.ts';

describe('clientNetwork', () => {
  it('keys an IPv4 client by its /24 (or another prefix), and an IPv4-mapped one as IPv4', () => {
    expect(clientNetwork('192.0.2.77', 24, 64)).toBe('192.0.2.0/24');
    expect(clientNetwork('::ffff:192.0.2.77', 24, 64)).toBe('192.0.2.0/24');
    expect(clientNetwork('::FFFF:192.0.2.77', 24, 64)).toBe('192.0.2.0/24');
    expect(clientNetwork('203.0.113.200', 32, 64)).toBe('203.0.113.200/32');
    expect(clientNetwork('203.0.113.200', 20, 64)).toBe('203.0.112.0/20');
    expect(clientNetwork('255.255.255.255', 8, 64)).toBe('255.0.0.0/8');
  });

  it('keys an IPv6 client by its /64, whichever way the address is written', () => {
    const net = '2001:db8:1:2::/64';
    expect(clientNetwork('2001:db8:1:2:a:b:c:d', 24, 64)).toBe(net);
    expect(clientNetwork('2001:0DB8:0001:0002:ffff:0:0:1', 24, 64)).toBe(net);
    expect(clientNetwork('2001:db8:1:2::1', 24, 64)).toBe(net);
    expect(clientNetwork('2001:db8:1:2::1%eth0', 24, 64)).toBe(net);
    expect(clientNetwork('2001:db8:1:3::1', 24, 64)).toBe('2001:db8:1:3::/64');
    expect(clientNetwork('2001:db8::1:2:3:4', 24, 64)).toBe('2001:db8::/64');
    expect(clientNetwork('::1', 24, 64)).toBe('::/64');
    expect(clientNetwork('2001:db8:1:2:3:4:1.2.3.4', 24, 128)).toBe('2001:db8:1:2:3:4:102:304/128');
  });

  it('masks inside a group for prefixes that are not a multiple of 16', () => {
    expect(clientNetwork('2001:db8:abcd:ef12::1', 24, 56)).toBe('2001:db8:abcd:ef00::/56');
    expect(clientNetwork('2001:db8:abcd:ef12::1', 24, 48)).toBe('2001:db8:abcd::/48');
    expect(clientNetwork('2001:db8:0:0:1:0:0:1', 24, 128)).toBe('2001:db8::1:0:0:1/128');
  });

  it('leaves what is not an IP address as it is (a Unix socket peer)', () => {
    expect(clientNetwork('/run/mailframe.sock', 24, 64)).toBe('/run/mailframe.sock');
  });
});

describe('networkMatcher', () => {
  it('matches addresses and CIDRs of both families, and names a bad entry', () => {
    const m = networkMatcher(['192.0.2.0/24', '2001:db8::/32', '198.51.100.7'], 'allow.networks');
    expect(m('192.0.2.9')).toBe(true);
    expect(m('::ffff:192.0.2.9')).toBe(true);
    expect(m('2001:db8:ffff::1')).toBe(true);
    expect(m('198.51.100.7')).toBe(true);
    expect(m('198.51.100.8')).toBe(false);
    expect(m('/run/x.sock')).toBe(false);
    expect(() => networkMatcher(['192.0.2.0/33'], 'allow.networks')).toThrow(
      'allow.networks: "192.0.2.0/33" has a prefix length outside 0-32',
    );
    expect(() => networkMatcher(['example.org'], 'exempt.networks')).toThrow(
      'exempt.networks: "example.org" is not an IP address or CIDR',
    );
  });
});
