/**
 * The outbound client's pieces: reply parsing, EHLO capabilities, xtext, the
 * DATA and BDAT payloads, the message scan, job envelopes and domain claims.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { crlfToLf } from '../../plugins/deliver-maildir/line-endings.ts';
import { safeSegment } from '../../plugins/deliver-maildir/mailbox-path.ts';
import { Capabilities } from '../../plugins/outbound/capabilities.ts';
import { envelopeOf } from '../../plugins/outbound/envelope.ts';
import { chunks, dotStuffed, scanMessage } from '../../plugins/outbound/message-body.ts';
import { ReplyReader, ReplySyntaxError, replyText } from '../../plugins/outbound/reply-reader.ts';
import { domainMatcher } from '../../plugins/outbound/routing.ts';
import { encodeOrcpt, encodeXtext } from '../../plugins/outbound/xtext.ts';
import { deliveryJob } from '../e2e/deliver-helpers.ts';

async function* source(parts: readonly (string | Buffer)[]): AsyncGenerator<Buffer> {
  for (const p of parts) yield typeof p === 'string' ? Buffer.from(p, 'latin1') : p;
}

async function collect<T>(gen: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of gen) out.push(x);
  return out;
}

describe('ReplyReader', () => {
  it('reads single and multi-line replies across chunk boundaries', () => {
    const r = new ReplyReader();
    expect(r.push('250-mx.example greets you\r\n250-PIPE')).toEqual([]);
    expect(r.midReply).toBe(true);
    const [ehlo] = r.push('LINING\r\n250 8BITMIME\r\n');
    expect(ehlo).toEqual({
      code: 250,
      enhanced: undefined,
      lines: ['mx.example greets you', 'PIPELINING', '8BITMIME'],
    });
    expect(r.midReply).toBe(false);
    const replies = r.push('250 2.1.0 Sender OK\r\n550 5.1.1 <x@y> No such user\r\n354 Go ahead\r\n');
    expect(replies.map((x) => [x.code, x.enhanced, x.lines[0]])).toEqual([
      [250, '2.1.0', 'Sender OK'],
      [550, '5.1.1', '<x@y> No such user'],
      [354, undefined, 'Go ahead'],
    ]);
  });

  it('takes the enhanced code only when every line has one of the reply class', () => {
    const r = new ReplyReader();
    const [a] = r.push('550-5.7.1 Blocked\r\n550 5.7.1 see https://x\r\n');
    expect(a).toMatchObject({ enhanced: '5.7.1', lines: ['Blocked', 'see https://x'] });
    const [b] = r.push('451 5.1.1 wrong class\r\n');
    expect(b).toMatchObject({ enhanced: undefined, lines: ['5.1.1 wrong class'] });
    const [c] = r.push('250 2.0.0\r\n');
    expect(c).toMatchObject({ enhanced: '2.0.0', lines: [''] });
  });

  it('accepts a bare LF line ending and a code without text', () => {
    const r = new ReplyReader();
    expect(r.push('220 ready\n250\r\n').map((x) => [x.code, x.lines])).toEqual([
      [220, ['ready']],
      [250, ['']],
    ]);
  });

  it('keeps a UTF-8 character split between chunks', () => {
    const r = new ReplyReader();
    const bytes = Buffer.from('550 caf\u00e9 closed\r\n', 'utf8');
    expect(r.push(bytes.subarray(0, 8))).toEqual([]);
    expect(r.push(bytes.subarray(8))[0]?.lines).toEqual(['caf\u00e9 closed']);
  });

  it('rejects garbage, a code change inside a reply and endless lines', () => {
    expect(() => new ReplyReader().push('hello\r\n')).toThrow(ReplySyntaxError);
    expect(() => new ReplyReader().push('250-a\r\n251 b\r\n')).toThrow(ReplySyntaxError);
    expect(() => new ReplyReader().push('250x\r\n')).toThrow(ReplySyntaxError);
    expect(() => new ReplyReader().push('199 too low\r\n')).toThrow(ReplySyntaxError);
    expect(() => new ReplyReader({ maxLineLength: 100 }).push(`250 ${'x'.repeat(200)}`)).toThrow(
      ReplySyntaxError,
    );
    expect(() => new ReplyReader({ maxLines: 3 }).push('250-a\r\n250-b\r\n250-c\r\n250-d\r\n')).toThrow(
      ReplySyntaxError,
    );
  });

  it('reset drops what was buffered (STARTTLS)', () => {
    const r = new ReplyReader();
    r.push('250-injected\r\n');
    r.reset();
    expect(r.push('220 clean\r\n')[0]?.lines).toEqual(['clean']);
  });

  it('replyText joins lines and strips control characters', () => {
    expect(replyText({ code: 550, enhanced: undefined, lines: ['a\u0000b', 'c'] })).toBe('a b c');
    expect(replyText({ code: 550, enhanced: undefined, lines: ['x'.repeat(50)] }, 10)).toBe('xxxxxxx...');
  });
});

describe('Capabilities', () => {
  it('parses EHLO keywords, SIZE and AUTH mechanisms', () => {
    const [reply] = new ReplyReader().push(
      '250-mx.example\r\n250-size 1000\r\n250-AUTH plain LOGIN\r\n250-8BITMIME\r\n250 X-BAD=kw\r\n',
    );
    const caps = Capabilities.fromReply(reply);
    expect(caps.has('SIZE')).toBe(true);
    expect(caps.maxSize).toBe(1000);
    expect(caps.authMechanisms).toEqual(['PLAIN', 'LOGIN']);
    expect(caps.has('8bitmime')).toBe(true);
    expect(caps.has('X-BAD=KW')).toBe(false);
    expect(caps.has('mx.example')).toBe(false);
    const unlimited = Capabilities.fromReply(new ReplyReader().push('250-x\r\n250 SIZE 0\r\n')[0]);
    expect(unlimited.maxSize).toBeUndefined();
  });
});

describe('xtext', () => {
  it('encodes +, =, controls, space and non-ASCII octets (RFC 3461 4)', () => {
    expect(encodeXtext('plain-text_1.2')).toBe('plain-text_1.2');
    expect(encodeXtext('a+b=c d')).toBe('a+2Bb+3Dc+20d');
    expect(encodeXtext('\u00e9\r\n')).toBe('+C3+A9+0D+0A');
  });

  it('encodes ORCPT, utf-8 addresses per RFC 6533', () => {
    expect(encodeOrcpt('rfc822', 'bob+tag@example.com')).toBe('rfc822;bob+2Btag@example.com');
    expect(encodeOrcpt('utf-8', 'j\u00f6rg@example.com')).toBe('utf-8;j\\x{F6}rg@example.com');
    expect(encodeOrcpt('rfc822', 'j\u00f6rg+x@example.com')).toBe('utf-8;j\\x{F6}rg\\x{2B}x@example.com');
  });
});

describe('DATA and BDAT payloads', () => {
  const stuff = async (parts: readonly string[]) =>
    Buffer.concat((await collect(dotStuffed(source(parts)))).flat()).toString('latin1');

  it('dot-stuffs line-initial dots across chunk boundaries and ends with CRLF.CRLF', async () => {
    expect(await stuff(['a\r\n.b\r\n'])).toBe('a\r\n..b\r\n.\r\n');
    expect(await stuff(['a\r', '\n', '.', 'b\r\n.', '\r\n'])).toBe('a\r\n..b\r\n..\r\n.\r\n');
    expect(await stuff(['.'])).toBe('..\r\n.\r\n');
    expect(await stuff(['no final newline'])).toBe('no final newline\r\n.\r\n');
    expect(await stuff([])).toBe('.\r\n');
  });

  it('never lets a bare LF before a dot end the data early', async () => {
    expect(await stuff(['a\n.\nb\r\n'])).toBe('a\r\n..\r\nb\r\n.\r\n');
  });

  it('cuts BDAT chunks of exactly the size, flagging the last', async () => {
    const got = await collect(chunks(source(['abc', 'defgh', 'ij']), 4));
    expect(got.map((c) => [c.data.toString(), c.last])).toEqual([
      ['abcd', false],
      ['efgh', false],
      ['ij', true],
    ]);
    const exact = await collect(chunks(source(['abcd', 'efgh']), 4));
    expect(exact.map((c) => [c.data.toString(), c.last])).toEqual([
      ['abcd', false],
      ['efgh', true],
    ]);
    expect((await collect(chunks(source([]), 4))).map((c) => [c.data.length, c.last])).toEqual([[0, true]]);
  });
});

describe('scanMessage', () => {
  it('measures the size and finds 8-bit octets in headers or body', async () => {
    const scan = (parts: readonly (string | Buffer)[]) => scanMessage(Readable.from(source(parts)));
    expect(await scan(['Subject: a\r\n\r\nbody\r\n'])).toEqual({
      size: 20,
      eightBit: false,
      eightBitHeaders: false,
    });
    expect(await scan(['Subject: a\r\n\r', '\n', Buffer.from([0xe9])])).toEqual({
      size: 15,
      eightBit: true,
      eightBitHeaders: false,
    });
    expect(await scan([Buffer.from('Subject: \u00e9\r\n\r\nx', 'utf8')])).toMatchObject({
      eightBit: true,
      eightBitHeaders: true,
    });
    expect(await scan(['\r\n', Buffer.from([0x80])])).toMatchObject({
      eightBit: true,
      eightBitHeaders: false,
    });
  });
});

describe('envelopeOf', () => {
  it('reads DSN, REQUIRETLS, BODY and SMTPUTF8 attributes, dropping malformed ones', () => {
    const env = envelopeOf(
      deliveryJob({
        to: [
          {
            address: 'a@x.example',
            attributes: {
              dsn: { notify: ['SUCCESS', 'DELAY'], orcpt: { type: 'RFC822', address: 'A@x.example' } },
            },
          },
          { address: 'b@x.example', attributes: { dsn: { notify: ['NEVER', 'SUCCESS'], orcpt: 42 } } },
          { address: 'c@x.example', attributes: { dsn: 'nonsense' } },
          { address: 'd@x.example', attributes: { dsn: { notify: 'FAILURE', orcpt: 'rfc822;d@y.example' } } },
          { address: 'e@x.example', attributes: { dsn: { notify: ['FAILURE'] } } },
        ],
        message: '',
        attributes: { body: '8bitmime', smtputf8: true, requireTls: true, dsn: { ret: 'FULL', envid: 'E1' } },
      }),
    );
    expect(env.body).toBe('8BITMIME');
    expect(env.smtputf8).toBe(true);
    expect(env.requireTls).toBe(true);
    expect(env.dsn).toEqual({ ret: 'FULL', envid: 'E1' });
    expect(env.recipients).toEqual([
      {
        address: 'a@x.example',
        notify: ['SUCCESS', 'DELAY'],
        orcpt: { type: 'rfc822', address: 'A@x.example' },
      },
      { address: 'b@x.example' },
      { address: 'c@x.example' },
      // Only the shape the dsn plugin records is read: strings are not parsed again.
      { address: 'd@x.example' },
      { address: 'e@x.example', notify: ['FAILURE'] },
    ]);
    const bare = envelopeOf(
      deliveryJob({ to: ['a@x.example'], message: '', attributes: { body: 'weird', requireTls: 'yes' } }),
    );
    expect(bare).not.toHaveProperty('body');
    expect(bare).not.toHaveProperty('requireTls');
    expect(bare).not.toHaveProperty('dsn');
  });
});

describe('domainMatcher', () => {
  it('matches exact names, *.suffix subdomains and *', () => {
    const m = domainMatcher(['Example.com', '*.sub.example']);
    expect(m('example.com')).toBe(true);
    expect(m('EXAMPLE.COM.')).toBe(true);
    expect(m('www.example.com')).toBe(false);
    expect(m('a.sub.example')).toBe(true);
    expect(m('a.b.sub.example')).toBe(true);
    expect(m('sub.example')).toBe(false);
    expect(m('xsub.example')).toBe(false);
    expect(domainMatcher(['*'])('anything.example')).toBe(true);
    expect(domainMatcher([])('example.com')).toBe(false);
  });
});

describe('Maildir helpers', () => {
  it('crlfToLf converts CRLF across chunks and keeps lone CRs', async () => {
    const out = async (parts: readonly string[]) =>
      Buffer.concat(await collect(crlfToLf(source(parts)))).toString('latin1');
    expect(await out(['a\r\nb\r', '\nc\r', 'd\r'])).toBe('a\nb\nc\rd\r');
  });

  it('safeSegment keeps names inside one directory level', () => {
    expect(safeSegment('Alice')).toBe('alice');
    expect(safeSegment('..')).toBe('__');
    expect(safeSegment('../etc/passwd')).toBe('__/etc/passwd'.replace(/\//g, '_'));
    expect(safeSegment('a\u0000b')).toBe('a_b');
    expect(safeSegment('J\u00d6RG')).toBe('j\u00f6rg');
  });
});
