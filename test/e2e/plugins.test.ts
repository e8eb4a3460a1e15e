/**
 * Plugin isolation and hook semantics as a client sees them: failing taps
 * become 451 4.3.0 without leaking the error, timeouts, connect verdicts,
 * stage ordering, listener scoping, and the data/message/queue/headers hooks.
 */
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { SmtpClient, TestServer } from '../../core/testkit.ts';
import { afterReceived } from '../helpers/message.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();
const LOCAL = ['rcpt-local', { domains: ['example.com'] }] as const;
const SECRET = 'db password is hunter2';

async function inTransaction(t: TestServer): Promise<SmtpClient> {
  const c = await scope.connect(t);
  await c.expect('EHLO client.example', 250);
  await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  return c;
}

/** A plugin whose rcpt tap misbehaves for recipients whose local part is `local`. */
function rcptPlugin(name: string, local: string, behaviour: () => unknown) {
  return definePlugin({
    name,
    schema: Type.Object({}),
    register(api) {
      api.hooks.rcpt.tap((_tx, to) =>
        to.address.localPart === local ? (behaviour() as undefined) : undefined,
      );
    },
  });
}

describe('error isolation', () => {
  it('turns a throwing tap into 451 4.3.0 without the error text, and keeps serving', async () => {
    const thrower = rcptPlugin('thrower', 'boom', () => {
      throw new Error(SECRET);
    });
    const t = await scope.start({ plugins: [thrower, LOCAL] });
    const c = await inTransaction(t);
    const r = await c.expect('RCPT TO:<boom@example.com>', 451, '4.3.0');
    expect(r.raw).not.toContain('hunter2');
    // The same session goes on: other recipients are accepted.
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\ny\r\n')).code).toBe(250);
    await c.expect('QUIT', 221);
    await c.waitClosed();
    expect(c.pending).not.toContain('hunter2');
    // So does the server, for the next connection.
    const d = await inTransaction(t);
    await d.expect('RCPT TO:<boom@example.com>', 451, '4.3.0');
    await d.expect('RCPT TO:<carol@example.com>', 250, '2.1.5');
  });

  it('turns a rejected promise into 451 4.3.0', async () => {
    const rejecter = rcptPlugin('rejecter', 'boom', () => Promise.reject(new Error(SECRET)));
    const t = await scope.start({ plugins: [rejecter, LOCAL] });
    const c = await inTransaction(t);
    const r = await c.expect('RCPT TO:<boom@example.com>', 451, '4.3.0');
    expect(r.raw).not.toContain('hunter2');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
  });

  it('turns a tap that never answers into 451 4.3.0 after the entry timeout', async () => {
    const hang = rcptPlugin('hang', 'stuck', () => new Promise(() => {}));
    const t = await scope.start({ plugins: [{ plugin: hang, timeout: 200 }, LOCAL] });
    const c = await inTransaction(t);
    await c.expect('RCPT TO:<stuck@example.com>', 451, '4.3.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\ny\r\n')).code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(m?.recipients).toEqual(['bob@example.com']);
  });

  it('times out only the calls that overrun, while other calls of the same plugin answer', async () => {
    // One shared timer per plugin and timeout length (core/deadlines.ts): calls in flight together.
    const mixed = rcptPlugin('mixed', 'stuck', () => new Promise(() => {}));
    const slowOk = definePlugin({
      name: 'slow-ok',
      schema: Type.Object({}),
      register(api) {
        api.hooks.rcpt.tap(
          (_tx, to) =>
            new Promise<undefined>((r) => setTimeout(r, to.address.localPart === 'slow' ? 50 : 0, undefined)),
        );
      },
    });
    const t = await scope.start({
      plugins: [{ plugin: mixed, timeout: 300 }, { plugin: slowOk, timeout: 300 }, LOCAL],
    });
    const [a, b, c] = await Promise.all([inTransaction(t), inTransaction(t), inTransaction(t)]);
    const [stuck, slow, quick] = await Promise.all([
      a.expect('RCPT TO:<stuck@example.com>', 451, '4.3.0'),
      b.expect('RCPT TO:<slow@example.com>', 250, '2.1.5'),
      c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5'),
    ]);
    expect([stuck.code, slow.code, quick.code]).toEqual([451, 250, 250]);
    // After a timeout the plugin's later calls still get their own full timeout.
    await a.expect('RCPT TO:<slow@example.com>', 250, '2.1.5');
    await b.expect('RCPT TO:<stuck@example.com>', 451, '4.3.0');
  });

  it('turns a throwing mail tap into 451 4.3.0 and leaves no transaction open', async () => {
    const p = definePlugin({
      name: 'mail-thrower',
      schema: Type.Object({}),
      register(api) {
        api.hooks.mail.tap((_tx, from) => {
          if (from.address?.localPart === 'boom') throw new Error(SECRET);
          return undefined;
        });
      },
    });
    const t = await scope.start({ plugins: [p, LOCAL] });
    const c = await scope.connect(t);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<boom@b.example>', 451, '4.3.0');
    await c.expect('RCPT TO:<bob@example.com>', 503, '5.5.1');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  });
});

describe('connect hook', () => {
  it('a 554 verdict replaces the greeting; later commands get 503, QUIT gets 221', async () => {
    const p = definePlugin({
      name: 'refuse-all',
      schema: Type.Object({}),
      register(api) {
        api.hooks.connect.tap(() => reply(554, '5.7.1', 'No SMTP service here'));
      },
    });
    const t = await scope.start({ plugins: [p] });
    const c = await scope.connect(t);
    expect(c.greeting?.code).toBe(554);
    expect(c.greeting?.raw).toContain('No SMTP service here');
    expect((await c.expect('EHLO client.example', 503)).raw.startsWith('503 ')).toBe(true);
    await c.expect('MAIL FROM:<a@b.example>', 503);
    await c.expect('NOOP', 503);
    await c.expect('QUIT', 221);
    await c.waitClosed();
  });

  it('a 4xx verdict other than 421 becomes 421 and closes', async () => {
    const p = definePlugin({
      name: 'greylist-connect',
      schema: Type.Object({}),
      register(api) {
        api.hooks.connect.tap(() => reply(450, '4.7.1', 'Try again later'));
      },
    });
    const t = await scope.start({ plugins: [p] });
    const c = await scope.connect(t);
    expect(c.greeting?.code).toBe(421);
    expect(c.greeting?.lines.join(' ')).toContain('Try again later');
    await c.waitClosed();
  });

  it('a 421 verdict is sent and the connection closed', async () => {
    const p = definePlugin({
      name: 'busy',
      schema: Type.Object({}),
      register(api) {
        api.hooks.connect.tap(() => reply(421, '4.3.2', 'Too busy'));
      },
    });
    const t = await scope.start({ plugins: [p] });
    const c = await scope.connect(t);
    expect(c.greeting?.code).toBe(421);
    expect(c.greeting?.lines.join(' ')).toContain('Too busy');
    await c.waitClosed();
  });

  it('a throwing connect tap answers 421 and closes, without leaking the error', async () => {
    let healthy = false;
    const p = definePlugin({
      name: 'broken-connect',
      schema: Type.Object({}),
      register(api) {
        api.hooks.connect.tap(() => {
          if (!healthy) throw new Error(SECRET);
          return undefined;
        });
      },
    });
    const t = await scope.start({ plugins: [p] });
    const c = await scope.connect(t);
    // The failure is transient: 421 and close, not a 554 that would refuse the mail for good.
    expect(c.greeting?.code).toBe(421);
    expect(c.greeting?.raw).not.toContain('hunter2');
    await c.waitClosed();
    // The next connection is greeted normally once the plugin behaves.
    healthy = true;
    const d = await scope.connect(t);
    expect(d.greeting?.code).toBe(220);
  });
});

describe('ordering and scoping', () => {
  it('runs the lower stage first, whatever the config order', async () => {
    const calls: string[] = [];
    const late = definePlugin({
      name: 'late',
      schema: Type.Object({}),
      register(api) {
        api.hooks.rcpt.tap(
          () => {
            calls.push('late');
            return reply(250, '2.1.5', 'late says yes');
          },
          { stage: Stage.LATE },
        );
      },
    });
    const early = definePlugin({
      name: 'early',
      schema: Type.Object({}),
      register(api) {
        api.hooks.rcpt.tap(
          (_tx, to) => {
            calls.push('early');
            return to.address.localPart === 'blocked' ? reply(550, '5.7.1', 'early says no') : undefined;
          },
          { stage: Stage.EARLY },
        );
      },
    });
    const t = await scope.start({ plugins: [late, early] });
    const c = await inTransaction(t);
    const no = await c.expect('RCPT TO:<blocked@example.com>', 550, '5.7.1');
    expect(no.lines).toEqual(['early says no']);
    expect(calls).toEqual(['early']);
    const yes = await c.expect('RCPT TO:<fine@example.com>', 250, '2.1.5');
    expect(yes.lines).toEqual(['late says yes']);
    expect(calls).toEqual(['early', 'early', 'late']);
  });

  it('never fires a plugin scoped to another listener', async () => {
    let fired = 0;
    const p = definePlugin({
      name: 'submission-only',
      schema: Type.Object({}),
      register(api) {
        const count = () => {
          fired++;
          return undefined;
        };
        api.hooks.connect.tap(() => {
          fired++;
          return reply(554, '5.7.1', 'scoped plugin ran');
        });
        api.hooks.ehlo.tap(count);
        api.hooks.mail.tap(count);
        api.hooks.rcpt.tap(() => {
          fired++;
          return reply(550, '5.7.1', 'scoped plugin ran');
        });
        api.hooks.data.tap(count);
        api.hooks.message.tap(count);
        api.hooks.headers.tap((fields) => {
          fired++;
          return [...fields, 'X-Scoped: yes'];
        });
      },
    });
    const t = await scope.start({ plugins: [{ plugin: p, listeners: ['submission'] }, LOCAL] });
    const c = await scope.connect(t);
    expect(c.greeting?.code).toBe(220);
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\ny\r\n')).code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(m?.text).not.toContain('X-Scoped');
    expect(fired).toBe(0);
  });

  it('fires a plugin scoped to the listener it runs on', async () => {
    let fired = 0;
    const counting = definePlugin({
      name: 'smtp-only',
      schema: Type.Object({}),
      register(api) {
        api.hooks.rcpt.tap(() => {
          fired++;
          return undefined;
        });
      },
    });
    const t = await scope.start({ plugins: [{ plugin: counting, listeners: ['smtp'] }, LOCAL] });
    const c = await inTransaction(t);
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    expect(fired).toBe(1);
  });
});

describe('message path hooks', () => {
  it("returns a queue plugin's 4xx reply", async () => {
    const q = definePlugin({
      name: 'full-queue',
      schema: Type.Object({}),
      register(api) {
        api.hooks.queue.tap(() => reply(452, '4.3.1', 'Queue is full'));
      },
    });
    const t = await scope.start({ plugins: [LOCAL, q] });
    const c = await inTransaction(t);
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    const r = await c.sendData('Subject: x\r\n\r\ny\r\n');
    expect([r.code, r.enhanced]).toEqual([452, '4.3.1']);
    expect(r.lines).toEqual(['Queue is full']);
    expect(t.queued).toHaveLength(0);
    // The transaction is over.
    await c.expect('RCPT TO:<bob@example.com>', 503, '5.5.1');
  });

  it('answers 451 4.3.0 when no plugin queues the message', async () => {
    const t = await scope.start({ plugins: [LOCAL], capture: false });
    const c = await inTransaction(t);
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    const r = await c.sendData('Subject: x\r\n\r\ny\r\n');
    expect([r.code, r.enhanced]).toEqual([451, '4.3.0']);
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
  });

  it('treats a throwing queue plugin as 451 4.3.0', async () => {
    const q = definePlugin({
      name: 'broken-queue',
      schema: Type.Object({}),
      register(api) {
        api.hooks.queue.tap(() => {
          throw new Error(SECRET);
        });
      },
    });
    const t = await scope.start({ plugins: [LOCAL, q] });
    const c = await inTransaction(t);
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    const r = await c.sendData('Subject: x\r\n\r\ny\r\n');
    expect([r.code, r.enhanced]).toEqual([451, '4.3.0']);
    expect(r.raw).not.toContain('hunter2');
    expect(t.queued).toHaveLength(0);
  });

  it('puts header fields from the headers hook right after Received', async () => {
    const h = definePlugin({
      name: 'add-header',
      schema: Type.Object({}),
      register(api) {
        api.hooks.headers.tap((fields, tx) => [...fields, `X-Checked: yes (${tx.recipients.length} rcpt)`]);
      },
    });
    const t = await scope.start({ plugins: [LOCAL, h] });
    const c = await inTransaction(t);
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\ny\r\n')).code).toBe(250);
    const [m] = await t.waitForMessages(1);
    expect(m?.text.startsWith('Received: ')).toBe(true);
    expect(afterReceived(m!).toString()).toBe('X-Checked: yes (1 rcpt)\r\nSubject: x\r\n\r\ny\r\n');
  });

  it('lets the message hook reject with 550 after the data', async () => {
    const seen: string[] = [];
    const check = definePlugin({
      name: 'body-check',
      schema: Type.Object({}),
      register(api) {
        api.hooks.message.tap(async (_tx, message) => {
          const text = (await message.read()).toString();
          seen.push(text);
          return text.includes('VIRUS') ? reply(550, '5.7.1', 'Message content rejected') : undefined;
        });
      },
    });
    const t = await scope.start({ plugins: [LOCAL, check] });
    const c = await inTransaction(t);
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    const r = await c.sendData('Subject: x\r\n\r\nVIRUS\r\n');
    expect([r.code, r.enhanced]).toEqual([550, '5.7.1']);
    expect(t.queued).toHaveLength(0);
    // The hook saw the whole message, Received first.
    expect(seen[0]).toMatch(/^Received: [\s\S]*\r\nSubject: x\r\n\r\nVIRUS\r\n$/);
    // Next transaction on the same session is clean and accepted.
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<bob@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\nclean\r\n')).code).toBe(250);
    expect(await t.waitForMessages(1)).toHaveLength(1);
  });

  it('lets the data hook refuse DATA before 354', async () => {
    const gate = definePlugin({
      name: 'data-gate',
      schema: Type.Object({}),
      register(api) {
        api.hooks.data.tap((tx) =>
          tx.recipients.some((r) => r.address.localPart === 'closed')
            ? reply(554, '5.7.1', 'Not now')
            : undefined,
        );
      },
    });
    const t = await scope.start({ plugins: [LOCAL, gate] });
    const c = await inTransaction(t);
    await c.expect('RCPT TO:<closed@example.com>', 250, '2.1.5');
    const r = await c.expect('DATA', 554, '5.7.1');
    expect(r.lines).toEqual(['Not now']);
    // Still in command mode: commands are answered as commands.
    await c.expect('NOOP', 250, '2.0.0');
    await c.expect('RSET', 250, '2.0.0');
    await c.expect('MAIL FROM:<a@b.example>', 250, '2.1.0');
    await c.expect('RCPT TO:<open@example.com>', 250, '2.1.5');
    await c.expect('DATA', 354);
    expect((await c.sendData('Subject: x\r\n\r\ny\r\n')).code).toBe(250);
  });

  it('lets a mail tap reject the sender and an ehlo tap reject the greeting', async () => {
    const p = definePlugin({
      name: 'picky',
      schema: Type.Object({}),
      register(api) {
        api.hooks.ehlo.tap((_s, helo) =>
          helo.domain === 'bad.example' ? reply(550, '5.7.1', 'Go away') : undefined,
        );
        api.hooks.mail.tap((_tx, from) =>
          from.address === null
            ? undefined
            : from.address.asciiDomain === 'spam.example'
              ? reply(550, '5.7.1', 'Sender refused')
              : undefined,
        );
      },
    });
    const t = await scope.start({ plugins: [p, LOCAL] });
    const c = await scope.connect(t);
    const e = await c.expect('EHLO bad.example', 550);
    expect(e.enhanced).toBeUndefined();
    await c.expect('MAIL FROM:<a@b.example>', 503);
    await c.expect('EHLO good.example', 250);
    await c.expect('MAIL FROM:<x@spam.example>', 550, '5.7.1');
    await c.expect('RCPT TO:<bob@example.com>', 503, '5.5.1');
    await c.expect('MAIL FROM:<x@ok.example>', 250, '2.1.0');
  });
});

describe('421 from a hook', () => {
  it('closes the connection after a 421 from any hook, ignoring pipelined commands', async () => {
    const p = rcptPlugin('overloaded', 'busy', () => reply(421, '4.3.2', 'Overloaded, closing'));
    const t = await scope.start({ plugins: [p, LOCAL] });
    const c = await inTransaction(t);
    c.send('RCPT TO:<busy@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n');
    const r = await c.read();
    expect([r.code, r.enhanced]).toEqual([421, '4.3.2']);
    await c.waitClosed();
    expect(c.pending).toBe('');
  });
});
