/**
 * 8BITMIME (RFC 6152) and BINARYMIME (RFC 3030 section 3): the BODY parameter,
 * recorded as `attributes.body`; 8-bit and binary content stored unchanged;
 * DATA refused for BODY=BINARYMIME.
 */
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import type { CapturedMessage, SmtpClient, TestPlugin, TestServer } from '../../core/testkit.ts';
import { plainTransport } from '../helpers/mailer.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;

async function session(
  plugins: readonly TestPlugin[],
): Promise<{ server: TestServer; client: SmtpClient; ehlo: readonly string[] }> {
  const server = await scope.start({ plugins });
  const client = await scope.connect(server);
  const ehlo = await client.expect('EHLO client.example', 250);
  return { server, client, ehlo: ehlo.lines };
}

/** The message as the client sent it: everything after the core's Received header. */
function afterReceived(m: CapturedMessage): Buffer {
  const end = /\r\n(?![ \t])/.exec(m.data.toString('latin1'));
  if (!end) throw new Error('no header end');
  return m.data.subarray(end.index + 2);
}

describe('8BITMIME', () => {
  it('advertises 8BITMIME, and not BINARYMIME without the chunking plugin', async () => {
    const { ehlo } = await session(['8bitmime', LOCAL]);
    expect(ehlo).toContain('8BITMIME');
    expect(ehlo).not.toContain('BINARYMIME');
  });

  it('records BODY=8BITMIME and stores 8-bit content unchanged', async () => {
    const { server, client } = await session(['8bitmime', LOCAL]);
    await client.expect('MAIL FROM:<a@b.example> BODY=8BITMIME', 250, '2.1.0');
    await client.expect('RCPT TO:<bob@example.com>', 250);
    await client.expect('DATA', 354);
    const body = Buffer.from('Subject: caf\u00e9\r\n\r\n\u00fcber \u00e7a \u2713\r\n', 'utf8');
    client.send(Buffer.concat([body, Buffer.from('.\r\n')]));
    expect((await client.read()).code).toBe(250);
    const [m] = await server.waitForMessages(1);
    expect(m?.attributes.body).toBe('8BITMIME');
    expect(afterReceived(m!).equals(body)).toBe(true);
  });

  it('accepts BODY=7BIT and keywords in any case', async () => {
    const { server, client } = await session(['8bitmime', LOCAL]);
    await client.expect('MAIL FROM:<a@b.example> body=7bit', 250, '2.1.0');
    await client.expect('RCPT TO:<bob@example.com>', 250);
    await client.expect('DATA', 354);
    expect((await client.sendData('Subject: plain\r\n\r\nascii\r\n')).code).toBe(250);
    const [m] = await server.waitForMessages(1);
    expect(m?.attributes.body).toBe('7BIT');
  });

  it('answers 501 5.5.4 to an unknown or missing BODY value', async () => {
    const { client } = await session(['8bitmime', LOCAL]);
    for (const bad of ['BODY=BINARYMIME', 'BODY=8BIT', 'BODY']) {
      await client.expect(`MAIL FROM:<a@b.example> ${bad}`, 501, '5.5.4');
    }
  });

  it('without the plugin, BODY= is an unknown parameter (555 5.5.4)', async () => {
    const { client } = await session([LOCAL]);
    await client.expect('MAIL FROM:<a@b.example> BODY=8BITMIME', 555, '5.5.4');
  });

  it('nodemailer sends BODY=8BITMIME when asked to and the server records it', async () => {
    const bodies: Array<string | true | undefined> = [];
    const recorder = definePlugin({
      name: 'test-body-recorder',
      schema: Type.Object({}),
      register(api) {
        api.hooks.mail.tap((_tx, from) => {
          bodies.push(from.params.get('BODY'));
          return undefined;
        });
      },
    });
    const t = await scope.start({ plugins: ['8bitmime', recorder, LOCAL] });
    const transport = plainTransport(t);
    const raw = Buffer.from(
      'From: a@b.example\r\nTo: bob@example.com\r\nSubject: 8bit\r\n\r\nGr\u00fc\u00dfe\r\n',
      'utf8',
    );
    const envelope = { from: 'a@b.example', to: ['bob@example.com'], use8BitMime: true };
    const info = await transport.sendMail({ envelope, raw });
    transport.close();
    expect(info.accepted).toEqual(['bob@example.com']);
    expect(bodies).toEqual(['8BITMIME']);
    const [m] = await t.waitForMessages(1);
    expect(m?.attributes.body).toBe('8BITMIME');
    expect(afterReceived(m!).equals(raw)).toBe(true);
  });
});

describe('BINARYMIME', () => {
  it('is advertised and accepted with the chunking plugin, in either load order', async () => {
    for (const plugins of [
      ['8bitmime', 'chunking', LOCAL],
      ['chunking', '8bitmime', LOCAL],
    ] as const) {
      const { server, client, ehlo } = await session([...plugins]);
      expect(ehlo).toEqual(expect.arrayContaining(['8BITMIME', 'BINARYMIME', 'CHUNKING']));
      await client.expect('MAIL FROM:<a@b.example> BODY=BINARYMIME', 250, '2.1.0');
      await client.close();
      await server.close();
    }
  });

  it('is neither advertised nor accepted when chunking has binaryMime off', async () => {
    const { client, ehlo } = await session(['8bitmime', ['chunking', { binaryMime: false }], LOCAL]);
    expect(ehlo).toContain('CHUNKING');
    expect(ehlo).not.toContain('BINARYMIME');
    await client.expect('MAIL FROM:<a@b.example> BODY=BINARYMIME', 501, '5.5.4');
  });

  it('refuses DATA for BODY=BINARYMIME with 503 5.5.1, then accepts the message by BDAT', async () => {
    const { server, client } = await session(['8bitmime', 'chunking', LOCAL]);
    await client.expect('MAIL FROM:<a@b.example> BODY=BINARYMIME', 250);
    await client.expect('RCPT TO:<bob@example.com>', 250);
    await client.expect('DATA', 503, '5.5.1');
    // Binary content: NUL, bare CR and LF, a lone dot line, high octets.
    const binary = Buffer.from([0x00, 0x0d, 0x0a, 0x2e, 0x0d, 0x0a, 0xff, 0x0a, 0x0d, 0x80, 0x2e]);
    const content = Buffer.concat([Buffer.from('Content-Transfer-Encoding: binary\r\n\r\n'), binary]);
    client.send(Buffer.concat([Buffer.from(`BDAT ${content.length} LAST\r\n`), content]));
    const r = await client.read();
    expect([r.code, r.enhanced]).toEqual([250, '2.0.0']);
    const [m] = await server.waitForMessages(1);
    expect(m?.attributes.body).toBe('BINARYMIME');
    expect(afterReceived(m!).equals(content)).toBe(true);
  });
});
