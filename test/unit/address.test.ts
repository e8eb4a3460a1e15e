import { describe, expect, it } from 'vitest';
import { isValidHeloDomain, type PathOptions, parseMailbox, parsePath } from '../../core/address.ts';
import type { Address } from '../../core/types.ts';
import { addr, MAIL, RCPT } from '../helpers/address.ts';

const MAIL8: PathOptions = { utf8: true, allowNull: true, allowPostmaster: false };
const RCPT8: PathOptions = { utf8: true, allowNull: false, allowPostmaster: true };

const label63 = 'a'.repeat(63);
/** A 255-octet domain: four 63-octet labels and three dots. */
const domain255 = [label63, label63, label63, label63].join('.');
const domain252 = [label63, label63, label63, 'd'.repeat(60)].join('.');
const domain256 = [label63, label63, label63, 'b'.repeat(62), 'c'].join('.');
/** `<` + 64 + `@` + 189 + `>` = 256 octets. */
const domain189 = [label63, label63, 'c'.repeat(61)].join('.');
const domain190 = [label63, label63, 'c'.repeat(62)].join('.');
const local64 = 'l'.repeat(64);

type Valid = [name: string, input: string, opts: PathOptions, address: Address | null, rest?: string];
type Invalid = [name: string, input: string, opts: PathOptions, error: 'syntax' | 'too-long' | 'non-ascii'];

const valid: readonly Valid[] = [
  ['plain', '<user@example.com>', MAIL, addr('user', 'example.com')],
  ['case preserved, domain lower-cased', '<John.Doe@Example.COM>', MAIL, addr('John.Doe', 'Example.COM')],
  ['leading spaces', '   <a@b.example>', MAIL, addr('a', 'b.example')],
  ['null path for MAIL', '<>', MAIL, null],
  ['null path with params', '<> BODY=8BITMIME', MAIL, null, ' BODY=8BITMIME'],
  [
    'postmaster',
    '<Postmaster>',
    RCPT,
    {
      localPart: 'Postmaster',
      domain: '',
      asciiDomain: '',
      domainKind: 'name',
      address: 'Postmaster',
      unicode: false,
    },
  ],
  [
    'postmaster upper case',
    '<POSTMASTER>',
    RCPT,
    {
      localPart: 'POSTMASTER',
      domain: '',
      asciiDomain: '',
      domainKind: 'name',
      address: 'POSTMASTER',
      unicode: false,
    },
  ],
  [
    'postmaster with domain is a mailbox',
    '<postmaster@example.com>',
    MAIL,
    addr('postmaster', 'example.com'),
  ],
  ['source route of one hop', '<@a.example:user@c.example>', MAIL, addr('user', 'c.example')],
  ['source route of two hops', '<@a.example,@b.example:user@c.example>', RCPT, addr('user', 'c.example')],
  ['all atext specials', "<!#$%&'*+-/=?^_`{|}~@x.example>", MAIL, addr("!#$%&'*+-/=?^_`{|}~", 'x.example')],
  ['dotted local part', '<a.b.c@x.example>', MAIL, addr('a.b.c', 'x.example')],
  ['numeric labels', '<a@123.example>', MAIL, addr('a', '123.example')],
  ['single-label domain', '<root@localhost>', MAIL, addr('root', 'localhost')],
  ['hyphen inside label', '<a@my-host.ex-ample.com>', MAIL, addr('a', 'my-host.ex-ample.com')],
  ['double hyphen inside label', '<a@xn--bcher-kva.example>', MAIL, addr('a', 'xn--bcher-kva.example')],
  ['quoted local part', '<"john"@x.example>', MAIL, addr('"john"', 'x.example')],
  ['quoted local part with spaces', '<"john smith"@x.example>', MAIL, addr('"john smith"', 'x.example')],
  ['quoted local part with escaped quote', '<"a\\"b"@x.example>', MAIL, addr('"a\\"b"', 'x.example')],
  ['quoted local part with > inside', '<"a>b"@x.example>', MAIL, addr('"a>b"', 'x.example')],
  ['quoted local part with @ and dots', '<"a@b..c."@x.example>', MAIL, addr('"a@b..c."', 'x.example')],
  ['quoted local part with escaped backslash', '<"a\\\\b"@x.example>', MAIL, addr('"a\\\\b"', 'x.example')],
  ['empty quoted local part', '<""@x.example>', MAIL, addr('""', 'x.example')],
  ['IPv4 literal', '<a@[192.0.2.1]>', MAIL, addr('a', '[192.0.2.1]', { domainKind: 'ipv4' })],
  ['IPv4 literal 255', '<a@[255.255.255.0]>', MAIL, addr('a', '[255.255.255.0]', { domainKind: 'ipv4' })],
  ['IPv4 literal 0.0.0.0', '<a@[0.0.0.0]>', MAIL, addr('a', '[0.0.0.0]', { domainKind: 'ipv4' })],
  [
    'IPv6 literal',
    '<a@[IPv6:2001:DB8::1]>',
    MAIL,
    addr('a', '[IPv6:2001:DB8::1]', { asciiDomain: '[ipv6:2001:db8::1]', domainKind: 'ipv6' }),
  ],
  ['IPv6 literal, lower-case tag', '<a@[ipv6:::1]>', MAIL, addr('a', '[ipv6:::1]', { domainKind: 'ipv6' })],
  [
    'IPv6 literal with embedded IPv4',
    '<a@[IPv6:::ffff:192.0.2.1]>',
    MAIL,
    addr('a', '[IPv6:::ffff:192.0.2.1]', { domainKind: 'ipv6' }),
  ],
  [
    'general literal',
    '<a@[x-tag:some.thing]>',
    MAIL,
    addr('a', '[x-tag:some.thing]', { domainKind: 'general' }),
  ],
  // Grammatically a General-address-literal with tag `2001`, not an IPv6 literal.
  ['IPv6 without tag', '<a@[2001:db8::1]>', MAIL, addr('a', '[2001:db8::1]', { domainKind: 'general' })],
  ['general literal with colons', '<a@[Tag:a:b]>', MAIL, addr('a', '[Tag:a:b]', { domainKind: 'general' })],
  [
    'params in rest, untrimmed',
    '<a@b.example> SIZE=100  BODY=8BITMIME ',
    MAIL,
    addr('a', 'b.example'),
    ' SIZE=100  BODY=8BITMIME ',
  ],
  ["garbage in rest is not the parser's business", '<a@b.example>x', MAIL, addr('a', 'b.example'), 'x'],
  ['64-octet local part', `<${local64}@x.example>`, MAIL, addr(local64, 'x.example')],
  ['63-octet label', `<a@${label63}.example>`, MAIL, addr('a', `${label63}.example`)],
  // A path cannot hold a 255-octet domain (the 256-octet path limit comes first); 252 is the most.
  ['252-octet domain', `<a@${domain252}>`, MAIL, addr('a', domain252)],
  ['256-octet path', `<${local64}@${domain189}>`, MAIL, addr(local64, domain189)],
  [
    'U-label domain with utf8',
    '<user@Bücher.example>',
    MAIL8,
    addr('user', 'Bücher.example', { asciiDomain: 'xn--bcher-kva.example', unicode: true }),
  ],
  ['UTF-8 local part with utf8', '<用户@example.com>', MAIL8, addr('用户', 'example.com', { unicode: true })],
  [
    'UTF-8 quoted local part with utf8',
    '<"ü ö"@example.com>',
    MAIL8,
    addr('"ü ö"', 'example.com', { unicode: true }),
  ],
  [
    'UTF-8 everywhere',
    '<δοκιμή@παράδειγμα.δοκιμή>',
    RCPT8,
    addr('δοκιμή', 'παράδειγμα.δοκιμή', { asciiDomain: 'xn--hxajbheg2az3al.xn--jxalpdlp', unicode: true }),
  ],
  ['ASCII path with utf8 is not unicode', '<a@b.example>', MAIL8, addr('a', 'b.example')],
  ['U-label in a source route', '<@bücher.example:a@b.example>', MAIL8, addr('a', 'b.example')],
  [
    '32 two-octet chars make a 64-octet local part',
    `<${'ü'.repeat(32)}@x.example>`,
    MAIL8,
    addr('ü'.repeat(32), 'x.example', { unicode: true }),
  ],
];

const invalid: readonly Invalid[] = [
  ['empty input', '', MAIL, 'syntax'],
  ['missing brackets', 'user@example.com', MAIL, 'syntax'],
  ['missing closing bracket', '<user@example.com', MAIL, 'syntax'],
  ['missing opening bracket', 'user@example.com>', MAIL, 'syntax'],
  ['null path not allowed for RCPT', '<>', RCPT, 'syntax'],
  ['postmaster not allowed for MAIL', '<Postmaster>', MAIL, 'syntax'],
  ['postmaster with route', '<@a.example:Postmaster>', RCPT, 'syntax'],
  ['bare local part', '<user>', MAIL, 'syntax'],
  ['space inside path', '<us er@example.com>', MAIL, 'syntax'],
  ['space before >', '<user@example.com >', MAIL, 'syntax'],
  ['space after <', '< user@example.com>', MAIL, 'syntax'],
  ['space in null path', '< >', MAIL, 'syntax'],
  ['empty local part', '<@example.com>', MAIL, 'syntax'],
  ['no domain', '<user@>', MAIL, 'syntax'],
  ['two @', '<a@b@c.example>', MAIL, 'syntax'],
  ['leading dot in local part', '<.a@x.example>', MAIL, 'syntax'],
  ['trailing dot in local part', '<a.@x.example>', MAIL, 'syntax'],
  ['double dot in local part', '<a..b@x.example>', MAIL, 'syntax'],
  ['leading dot in domain', '<a@.x.example>', MAIL, 'syntax'],
  ['trailing dot in domain', '<a@x.example.>', MAIL, 'syntax'],
  ['double dot in domain', '<a@x..example>', MAIL, 'syntax'],
  ['label starting with hyphen', '<a@-x.example>', MAIL, 'syntax'],
  ['label ending with hyphen', '<a@x-.example>', MAIL, 'syntax'],
  ['underscore in domain', '<a@x_y.example>', MAIL, 'syntax'],
  ['comma in local part', '<a,b@x.example>', MAIL, 'syntax'],
  ['unterminated quoted string', '<"abc@x.example>', MAIL, 'syntax'],
  ['text after quoted string', '<"a"b@x.example>', MAIL, 'syntax'],
  ['bad quoted-pair', '<"a\\\tb"@x.example>', MAIL, 'syntax'],
  ['tab in quoted string', '<"a\tb"@x.example>', MAIL, 'syntax'],
  ['control char in local part', '<a\u0001b@x.example>', MAIL, 'syntax'],
  ['DEL in local part', '<a\u007fb@x.example>', MAIL, 'syntax'],
  ['NUL in domain', '<a@x\u0000.example>', MAIL, 'syntax'],
  ['backslash in dot-string', '<a\\b@x.example>', MAIL, 'syntax'],
  ['route without colon', '<@a.example,user@c.example>', MAIL, 'syntax'],
  ['route hop without @', '<@a.example,b.example:user@c.example>', MAIL, 'syntax'],
  ['route with bad domain', '<@a..example:user@c.example>', MAIL, 'syntax'],
  ['IPv4 octet 256', '<a@[192.0.2.256]>', MAIL, 'syntax'],
  ['IPv4 with three octets', '<a@[192.0.2]>', MAIL, 'syntax'],
  ['IPv4 with five octets', '<a@[192.0.2.1.5]>', MAIL, 'syntax'],
  ['IPv4 four-digit octet', '<a@[0192.0.2.1]>', MAIL, 'syntax'],
  ['IPv4 empty octet', '<a@[192..2.1]>', MAIL, 'syntax'],
  ['IPv4 without brackets is a name, but trailing bracket', '<a@192.0.2.1]>', MAIL, 'syntax'],
  ['unclosed literal', '<a@[192.0.2.1>', MAIL, 'syntax'],
  ['empty literal', '<a@[]>', MAIL, 'syntax'],
  ['bad IPv6', '<a@[IPv6:2001:db8:::1]>', MAIL, 'syntax'],
  ['IPv6 with zone id', '<a@[IPv6:fe80::1%eth0]>', MAIL, 'syntax'],
  ['general literal with empty content', '<a@[x-tag:]>', MAIL, 'syntax'],
  ['general literal tag ending with hyphen', '<a@[tag-:x]>', MAIL, 'syntax'],
  ['general literal with space', '<a@[tag:a b]>', MAIL, 'syntax'],
  ['general literal with backslash', '<a@[tag:a\\b]>', MAIL, 'syntax'],
  ['text after literal', '<a@[192.0.2.1]x>', MAIL, 'syntax'],
  ['U-label domain without utf8', '<user@bücher.example>', MAIL, 'non-ascii'],
  ['UTF-8 local part without utf8', '<用户@example.com>', MAIL, 'non-ascii'],
  ['non-ascii reported before syntax', '<ü ü@@>', MAIL, 'non-ascii'],
  ['non-ascii in unclosed path', '<ü@example.com', MAIL, 'non-ascii'],
  ['full-width letters are not a U-label', '<a@ｅｘａｍｐｌｅ.com>', MAIL8, 'syntax'],
  ['ideographic full stop', '<a@例え。jp>', MAIL8, 'syntax'],
  ['non-ascii in literal', '<a@[tag:ü]>', MAIL8, 'syntax'],
  ['non-ascii quoted-pair', '<"\\ü"@x.example>', MAIL8, 'syntax'],
  ['U-label ending with hyphen', '<a@bücher-.example>', MAIL8, 'syntax'],
  ['65-octet local part', `<${'l'.repeat(65)}@x.example>`, MAIL, 'too-long'],
  ['65-octet quoted local part', `<"${'q'.repeat(63)}"@x.example>`, MAIL, 'too-long'],
  ['33 two-octet chars: 66-octet local part', `<${'ü'.repeat(33)}@x.example>`, MAIL8, 'too-long'],
  ['64-octet label', `<a@${'a'.repeat(64)}.example>`, MAIL, 'too-long'],
  ['U-label over 63 octets', `<a@${'ü'.repeat(32)}.example>`, MAIL8, 'too-long'],
  ['256-octet domain', `<a@${domain256}>`, MAIL, 'too-long'],
  ['255-octet domain exceeds the path limit', `<a@${domain255}>`, MAIL, 'too-long'],
  ['257-octet path', `<${local64}@${domain190}>`, MAIL, 'too-long'],
  ['257-octet path through a source route', `<@${domain190}:${local64}@x>`, MAIL, 'too-long'],
];

describe('parsePath', () => {
  it('has a large table', () => {
    expect(valid.length + invalid.length).toBeGreaterThanOrEqual(70);
  });

  it.each(valid)('accepts %s', (_name, input, opts, address, rest = '') => {
    expect(parsePath(input, opts)).toEqual({ ok: true, address, rest });
  });

  it.each(invalid)('rejects %s', (_name, input, opts, error) => {
    expect(parsePath(input, opts)).toEqual({ ok: false, error });
  });

  it('counts the path length in octets, not characters', () => {
    // Two-octet characters: 137 characters but 261 octets.
    const local = 'é'.repeat(31);
    const domain = `${'ä'.repeat(31)}.${'ö'.repeat(31)}.${'ü'.repeat(31)}.example`;
    expect(Buffer.byteLength(`<${local}@${domain}>`)).toBeGreaterThan(256);
    expect(`<${local}@${domain}>`.length).toBeLessThan(256);
    expect(parsePath(`<${local}@${domain}>`, MAIL8)).toEqual({ ok: false, error: 'too-long' });
  });

  it('stays fast on hostile input', () => {
    const hostile = `<${'a.'.repeat(50_000)}`;
    const started = performance.now();
    expect(parsePath(hostile, MAIL)).toEqual({ ok: false, error: 'syntax' });
    expect(parsePath(`<"${'\\"'.repeat(50_000)}`, MAIL)).toEqual({ ok: false, error: 'syntax' });
    expect(performance.now() - started).toBeLessThan(200);
  });
});

describe('parseMailbox', () => {
  it('parses a bare mailbox', () => {
    expect(parseMailbox('Someone@Example.org', { utf8: false })).toEqual({
      ok: true,
      address: addr('Someone', 'Example.org'),
    });
  });

  it('parses a quoted local part and a literal', () => {
    expect(parseMailbox('"a b"@[192.0.2.1]', { utf8: false })).toEqual({
      ok: true,
      address: addr('"a b"', '[192.0.2.1]', { domainKind: 'ipv4' }),
    });
  });

  it('accepts UTF-8 only with utf8', () => {
    expect(parseMailbox('ü@bücher.example', { utf8: false })).toEqual({ ok: false, error: 'non-ascii' });
    expect(parseMailbox('ü@bücher.example', { utf8: true })).toEqual({
      ok: true,
      address: addr('ü', 'bücher.example', { asciiDomain: 'xn--bcher-kva.example', unicode: true }),
    });
  });

  it.each([
    ['<a@b.example>', 'syntax'],
    ['a@b.example ', 'syntax'],
    [' a@b.example', 'syntax'],
    ['a', 'syntax'],
    ['', 'syntax'],
    [`${'l'.repeat(65)}@b.example`, 'too-long'],
    [`${local64}@${domain190}`, 'too-long'],
  ] as const)('rejects %j', (input, error) => {
    expect(parseMailbox(input, { utf8: false })).toEqual({ ok: false, error });
  });

  it('accepts a 254-octet mailbox', () => {
    expect(parseMailbox(`${local64}@${domain189}`, { utf8: false }).ok).toBe(true);
  });
});

describe('isValidHeloDomain', () => {
  it.each([
    ['mail.example.com', true],
    ['localhost', true],
    ['MAIL.Example.COM', true],
    ['xn--bcher-kva.example', true],
    ['[192.0.2.1]', true],
    ['[IPv6:2001:db8::1]', true],
    ['[x-tag:stuff]', true],
    [domain255, true],
    ['', false],
    ['mail.example.com.', false],
    ['.example.com', false],
    ['-mail.example.com', false],
    ['mail_host.example.com', false],
    ['bücher.example', false],
    ['mail example', false],
    ['[192.0.2.300]', false],
    ['[192.0.2.1', false],
    ['192.0.2.1]', false],
    ['[IPv6:nope]', false],
    [domain256, false],
    [`${'a'.repeat(64)}.example`, false],
  ] as const)('%j -> %s', (input, expected) => {
    expect(isValidHeloDomain(input)).toBe(expected);
  });
});
