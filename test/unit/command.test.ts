import { describe, expect, it } from 'vitest';
import {
  decodeXtext,
  parseCommand,
  parseMailArgument,
  parseParams,
  peekParams,
} from '../../core/codec/command.ts';
import { addr, MAIL, RCPT } from '../helpers/address.ts';

describe('parseCommand', () => {
  it.each([
    ['mail from:<a@b>', 'MAIL', 'from:<a@b>'],
    ['EHLO client.example', 'EHLO', 'client.example'],
    ['quit', 'QUIT', ''],
    ['QUIT   ', 'QUIT', ''],
    ['NOOP  ', 'NOOP', ''],
    ['RCPT TO:<a@b>   ', 'RCPT', 'TO:<a@b>'],
    ['RCPT  TO:<a@b>', 'RCPT', ' TO:<a@b>'],
    ['HELO x\t', 'HELO', 'x\t'],
    ['', '', ''],
    [' leading', '', 'leading'],
    ['StartTls', 'STARTTLS', ''],
    ['ſtarttls', 'ſTARTTLS', ''],
    ['dätä', 'DäTä', ''],
    ['x-Foo a b  c ', 'X-FOO', 'a b  c'],
  ] as const)('%j', (line, verb, argument) => {
    expect(parseCommand(line)).toEqual({ verb, argument });
  });
});

describe('peekParams', () => {
  it.each([
    ['FROM:<a@b.example>', 'FROM', { pathText: '<a@b.example>', paramsText: '' }],
    [
      'from: <a@b.example>  SIZE=10 BODY=8BITMIME  ',
      'FROM',
      { pathText: '<a@b.example>', paramsText: 'SIZE=10 BODY=8BITMIME' },
    ],
    [
      'TO:<"a> b"@c.example> NOTIFY=NEVER',
      'TO',
      { pathText: '<"a> b"@c.example>', paramsText: 'NOTIFY=NEVER' },
    ],
    ['TO:<"a\\"> b"@c.example>', 'TO', { pathText: '<"a\\"> b"@c.example>', paramsText: '' }],
    ['FROM:<> SMTPUTF8', 'FROM', { pathText: '<>', paramsText: 'SMTPUTF8' }],
    ['FROM:<ü@b> SMTPUTF8', 'FROM', { pathText: '<ü@b>', paramsText: 'SMTPUTF8' }],
    ['FROM:<a@b>x', 'FROM', undefined],
    ['FROM:<a@b', 'FROM', undefined],
    ['FROM:a@b', 'FROM', undefined],
    ['TO:<a@b>', 'FROM', undefined],
    ['FROM <a@b>', 'FROM', undefined],
  ] as const)('%j', (argument, prefix, expected) => {
    expect(peekParams(argument, prefix)).toEqual(expected);
  });
});

describe('parseMailArgument', () => {
  it('parses a plain MAIL argument', () => {
    expect(parseMailArgument('FROM:<a@b.example>', 'FROM', MAIL)).toEqual({
      ok: true,
      address: addr('a', 'b.example'),
      params: new Map(),
    });
  });

  it('accepts the prefix in any case', () => {
    for (const argument of ['from:<a@b.example>', 'From:<a@b.example>', 'fRoM:<a@b.example>']) {
      expect(parseMailArgument(argument, 'FROM', MAIL)).toEqual({
        ok: true,
        address: addr('a', 'b.example'),
        params: new Map(),
      });
    }
    expect(parseMailArgument('to:<a@b.example>', 'TO', RCPT)).toEqual({
      ok: true,
      address: addr('a', 'b.example'),
      params: new Map(),
    });
  });

  it('tolerates spaces after the colon', () => {
    expect(parseMailArgument('FROM:   <a@b.example>', 'FROM', MAIL)).toEqual({
      ok: true,
      address: addr('a', 'b.example'),
      params: new Map(),
    });
  });

  it('parses parameters', () => {
    expect(parseMailArgument('FROM:<a@b.example> size=1000  BODY=8BITMIME RET=HDRS', 'FROM', MAIL)).toEqual({
      ok: true,
      address: addr('a', 'b.example'),
      params: new Map([
        ['SIZE', '1000'],
        ['BODY', '8BITMIME'],
        ['RET', 'HDRS'],
      ]),
    });
  });

  it('parses the null reverse-path with parameters', () => {
    expect(parseMailArgument('FROM:<> SMTPUTF8', 'FROM', MAIL)).toEqual({
      ok: true,
      address: null,
      params: new Map([['SMTPUTF8', true]]),
    });
  });

  it('parses RCPT Postmaster', () => {
    expect(parseMailArgument('TO:<postmaster> NOTIFY=NEVER', 'TO', RCPT)).toEqual({
      ok: true,
      address: {
        localPart: 'postmaster',
        domain: '',
        asciiDomain: '',
        domainKind: 'name',
        address: 'postmaster',
        unicode: false,
      },
      params: new Map([['NOTIFY', 'NEVER']]),
    });
  });

  it('parses a quoted local part holding > and spaces', () => {
    expect(parseMailArgument('TO:<"x> y"@b.example> ORCPT=rfc822;x@b.example', 'TO', RCPT)).toEqual({
      ok: true,
      address: addr('"x> y"', 'b.example'),
      params: new Map([['ORCPT', 'rfc822;x@b.example']]),
    });
  });

  it('takes UTF-8 from opts, for the path and the parameters', () => {
    const argument = 'FROM:<ü@bücher.example> SMTPUTF8 ENVID=ü';
    expect(parseMailArgument(argument, 'FROM', MAIL)).toEqual({ ok: false, error: 'non-ascii' });
    expect(parseMailArgument(argument, 'FROM', { ...MAIL, utf8: true })).toEqual({
      ok: true,
      address: addr('ü', 'bücher.example', { asciiDomain: 'xn--bcher-kva.example', unicode: true }),
      params: new Map<string, string | true>([
        ['SMTPUTF8', true],
        ['ENVID', 'ü'],
      ]),
    });
  });

  it.each([
    ['FROM', '<a@b.example>', MAIL, 'prefix'],
    ['FROM', 'FROM <a@b.example>', MAIL, 'prefix'],
    ['FROM', 'TO:<a@b.example>', MAIL, 'prefix'],
    ['FROM', 'FROM;<a@b.example>', MAIL, 'prefix'],
    ['FROM', ' FROM:<a@b.example>', MAIL, 'prefix'],
    ['TO', 'FROM:<a@b.example>', RCPT, 'prefix'],
    ['FROM', 'FROM:', MAIL, 'syntax'],
    ['FROM', 'FROM:a@b.example', MAIL, 'syntax'],
    ['FROM', 'FROM:<a@b.example', MAIL, 'syntax'],
    ['FROM', 'FROM:<a@b.example>SIZE=1', MAIL, 'syntax'],
    ['FROM', 'FROM:<a..b@b.example>', MAIL, 'syntax'],
    ['TO', 'TO:<>', RCPT, 'syntax'],
    ['FROM', `FROM:<${'a'.repeat(65)}@b.example>`, MAIL, 'too-long'],
    ['FROM', 'FROM:<a@b.example> SIZE=', MAIL, 'param-syntax'],
    ['FROM', 'FROM:<a@b.example> SIZE=1 size=2', MAIL, 'param-syntax'],
    ['FROM', 'FROM:<a@b.example> -X', MAIL, 'param-syntax'],
    ['FROM', 'FROM:<a@b.example> ENVID=ü', MAIL, 'param-syntax'],
  ] as const)('%s %j -> %s', (prefix, argument, opts, error) => {
    expect(parseMailArgument(argument, prefix, opts)).toEqual({ ok: false, error });
  });
});

describe('parseParams', () => {
  it.each([
    ['', []],
    ['   ', []],
    ['SIZE=1000', [['SIZE', '1000']]],
    ['size=1000', [['SIZE', '1000']]],
    ['SMTPUTF8', [['SMTPUTF8', true]]],
    [
      'BODY=8BITMIME  SMTPUTF8 X-Foo=a:b;c',
      [
        ['BODY', '8BITMIME'],
        ['SMTPUTF8', true],
        ['X-FOO', 'a:b;c'],
      ],
    ],
    [' 8bit-x=!~ ', [['8BIT-X', '!~']]],
    [
      'NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@c',
      [
        ['NOTIFY', 'SUCCESS,FAILURE'],
        ['ORCPT', 'rfc822;a+2Bb@c'],
      ],
    ],
    [
      'A- B',
      [
        ['A-', true],
        ['B', true],
      ],
    ],
  ] as const)('accepts %j', (text, entries) => {
    expect(parseParams(text, false)).toEqual(new Map<string, string | true>(entries));
  });

  it.each([
    ['SIZE=1 SIZE=2', 'duplicate keyword'],
    ['SIZE=1 size=2', 'duplicate keyword, other case'],
    ['SMTPUTF8 smtputf8', 'duplicate flag'],
    ['-X=1', 'keyword starting with a hyphen'],
    ['X_Y=1', 'underscore in keyword'],
    ['=1', 'missing keyword'],
    ['SIZE=', 'equals without value'],
    ['SIZE= 1', 'equals followed by a space'],
    ['A=b=c', 'equals in value'],
    ['A=b\tB=c', 'tab in value'],
    ['A\tB', 'tab as separator'],
    ['A=\u0001', 'control character in value'],
    ['A=\u007f', 'DEL in value'],
    ['ENVID=ü', 'UTF-8 value without utf8'],
    ['KÖ=1', 'non-ASCII keyword'],
  ])('rejects %j (%s)', (text) => {
    expect(parseParams(text, false)).toBeUndefined();
  });

  it('accepts UTF-8 values only with utf8', () => {
    expect(parseParams('ENVID=zürich X=日本', true)).toEqual(
      new Map([
        ['ENVID', 'zürich'],
        ['X', '日本'],
      ]),
    );
    expect(parseParams('ENVID=zürich', false)).toBeUndefined();
    expect(parseParams('KÖ=1', true)).toBeUndefined();
  });
});

describe('decodeXtext', () => {
  it.each([
    ['', ''],
    ['plain', 'plain'],
    ['rfc822;user+40example.com', 'rfc822;user@example.com'],
    ['a+2Bb', 'a+b'],
    ['+3D', '='],
    ['+20+7E', ' ~'],
    ['+C3+BC', 'ü'],
    ['!"#~', '!"#~'],
  ])('decodes %j', (input, expected) => {
    expect(decodeXtext(input)).toBe(expected);
  });

  it.each([
    ['a+2b', 'lower-case hex'],
    ['a+', 'truncated'],
    ['a+4', 'truncated'],
    ['+G0', 'not hex'],
    ['a=b', 'raw ='],
    ['a b', 'space'],
    ['a\u007f', 'DEL'],
    ['ü', 'non-ASCII'],
    ['+C3', 'invalid UTF-8'],
  ])('rejects %j (%s)', (input) => {
    expect(decodeXtext(input)).toBeUndefined();
  });
});
