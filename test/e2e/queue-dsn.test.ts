import { describe, expect, it } from 'vitest';
import type { DeliveryJob, RecipientResult } from '../../core/types.ts';
import {
  Deliverer,
  FakeClock,
  parseFieldGroups,
  parseMultipart,
  type QueueStoreKind,
  type SeenJob,
  sendMail,
  useQueueScope,
} from './queue-harness.ts';

const scope = useQueueScope();

/** Mailboxes starting with `nobody` fail with 550 5.1.1, the rest are delivered; bounces are delivered too. */
function failNobody(job: DeliveryJob): { results: RecipientResult[] } {
  return {
    results: job.recipients.map((r) =>
      r.address.startsWith('nobody')
        ? {
            recipient: r.address,
            status: 'failed',
            reply: { code: 550, enhanced: '5.1.1', text: 'No such user here' },
            mta: 'mx.example.com',
          }
        : { recipient: r.address, status: 'delivered', reply: { code: 250, enhanced: '2.0.0', text: 'OK' } },
    ),
  };
}

async function setup(store: QueueStoreKind, queue: Record<string, unknown> = {}) {
  const clock = new FakeClock();
  const dir = await scope.tempDir();
  const d = new Deliverer(clock);
  d.behaviour = failNobody;
  const s = await scope.start({ store, clock, dataDir: dir, plugins: ['dsn', d.plugin], queue });
  return { clock, d, s };
}

function onlyBounce(d: Deliverer): SeenJob {
  const bounces = d.from('');
  expect(bounces).toHaveLength(1);
  return bounces[0] as SeenJob;
}

const BODY =
  'From: <alice@example.net>\r\nSubject: test\r\nMessage-ID: <m1@example.net>\r\n\r\nHello.\r\nSecond line.\r\n';

/** Send BODY with RET=FULL to a mailbox that fails, run the queue once, and return the bounce's MIME parts. */
async function bounceOfRetFull(store: QueueStoreKind, queue: Record<string, unknown> = {}) {
  const { d, s } = await setup(store, queue);
  await sendMail(s.port, {
    from: 'alice@example.net',
    to: ['nobody@example.com'],
    mailParams: 'RET=FULL',
    body: BODY,
  });
  await s.queue.runDue();
  return parseMultipart(onlyBounce(d).message).parts;
}

describe.each(scope.stores)('bounces (RFC 3464 delivery status notifications) on $name', (store) => {
  it('reports a failed recipient to the sender in a multipart/report', async () => {
    const { d, s } = await setup(store);
    const id = await sendMail(s.port, {
      from: 'alice@example.net',
      to: ['bob@example.com', 'nobody@example.com'],
      mailParams: 'RET=HDRS ENVID=QQ314159',
      rcptParams: [undefined, 'NOTIFY=FAILURE ORCPT=rfc822;Nobody+2Bx@example.com'],
      body: BODY,
    });
    await s.queue.runDue();

    const bounce = onlyBounce(d);
    expect(bounce.job.destination).toBe('example.net');
    expect(bounce.recipients).toEqual(['alice@example.net']);
    expect(bounce.job.attributes).toEqual({});
    const { headers, parts } = parseMultipart(bounce.message);
    expect(headers).toContain('From: Mail Delivery System <MAILER-DAEMON@mx.test.example>');
    expect(headers).toContain('To: <alice@example.net>');
    expect(headers).toContain('Subject: Undelivered Mail Returned to Sender');
    expect(headers).toContain('Auto-Submitted: auto-replied');
    expect(headers).toMatch(/^Date: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/m);
    expect(headers.replace(/\r\n\s+/g, ' ')).toMatch(
      /^Content-Type: multipart\/report; report-type=delivery-status; boundary="[^"]+"$/m,
    );
    expect(parts).toHaveLength(3);
    const [human, status, returned] = parts as [(typeof parts)[0], (typeof parts)[0], (typeof parts)[0]];

    expect(human.headers).toContain('Content-Type: text/plain; charset=us-ascii');
    expect(human.body).toContain('<nobody@example.com>');
    expect(human.body).toContain('550 5.1.1 No such user here');
    expect(human.body).not.toContain('bob@example.com');

    expect(status.headers).toContain('Content-Type: message/delivery-status');
    const [perMessage, perRecipient, extra] = parseFieldGroups(status.body);
    expect(extra).toBeUndefined(); // bob was delivered: not reported
    expect(perMessage?.get('reporting-mta')).toBe('dns; mx.test.example');
    expect(perMessage?.get('original-envelope-id')).toBe('QQ314159');
    expect(perMessage?.get('arrival-date')).toBe('Mon, 2 Mar 2026 10:00:00 +0000');
    expect(perMessage?.get('x-mailframe-queue-id')).toBe(id);
    expect(perRecipient?.get('final-recipient')).toBe('rfc822; nobody@example.com');
    expect(perRecipient?.get('original-recipient')).toBe('rfc822; Nobody+x@example.com');
    expect(perRecipient?.get('action')).toBe('failed');
    expect(perRecipient?.get('status')).toBe('5.1.1');
    expect(perRecipient?.get('remote-mta')).toBe('dns; mx.example.com');
    expect(perRecipient?.get('diagnostic-code')).toBe('smtp; 550 5.1.1 No such user here');
    expect(perRecipient?.get('last-attempt-date')).toBe('Mon, 2 Mar 2026 10:00:00 +0000');

    expect(returned.headers).toContain('Content-Type: text/rfc822-headers');
    expect(returned.body).toContain('Subject: test\r\nMessage-ID: <m1@example.net>\r\n');
    expect(returned.body).toMatch(/^Received: from client\.test/);
    expect(returned.body).not.toContain('Hello.');

    expect(await s.queue.list()).toEqual([]);
  });

  it('returns the whole message as message/rfc822 with RET=FULL', async () => {
    const parts = await bounceOfRetFull(store);
    const returned = parts[2];
    expect(returned?.headers).toContain('Content-Type: message/rfc822');
    expect(returned?.body).toMatch(/^Received: from client\.test/);
    expect(returned?.body.endsWith(BODY)).toBe(true);
  });

  it('returns only the headers when the message is larger than bounceMaxReturnSize', async () => {
    const parts = await bounceOfRetFull(store, { bounceMaxReturnSize: 100 });
    expect(parts[2]?.headers).toContain('Content-Type: text/rfc822-headers');
    expect(parts[2]?.body).not.toContain('Hello.');
    expect(parts[0]?.body).toContain('too large to return');
  });

  it('sends nothing for NOTIFY=NEVER', async () => {
    const { d, s } = await setup(store);
    await sendMail(s.port, {
      from: 'alice@example.net',
      to: ['nobody@example.com'],
      rcptParams: ['NOTIFY=NEVER'],
    });
    await s.queue.runDue();
    expect(d.seen.map((x) => x.job.from)).toEqual(['alice@example.net']);
    expect(await s.queue.list()).toEqual([]);
  });

  it('reports a successful delivery when NOTIFY=SUCCESS asks for it', async () => {
    const { d, s } = await setup(store);
    await sendMail(s.port, {
      from: 'alice@example.net',
      to: ['bob@example.com', 'carol@example.com'],
      rcptParams: ['NOTIFY=SUCCESS,FAILURE', undefined],
    });
    await s.queue.runDue();
    const { headers, parts } = parseMultipart(onlyBounce(d).message);
    expect(headers).toContain('Subject: Successful Mail Delivery Report');
    const groups = parseFieldGroups(parts[1]?.body ?? '');
    expect(groups.slice(1).map((g) => [g.get('final-recipient'), g.get('action'), g.get('status')])).toEqual([
      ['rfc822; bob@example.com', 'delivered', '2.0.0'],
    ]);
  });

  it('reports `relayed` for a next hop without DSN, nothing when the next hop took NOTIFY over', async () => {
    const { d, s } = await setup(store);
    const handoffs: Record<string, 'relayed' | 'passed-on'> = {
      'bob@example.com': 'relayed',
      'carol@example.com': 'passed-on',
    };
    d.behaviour = (job) => ({
      results: job.recipients.map((r) => {
        const dsnHandoff = handoffs[r.address];
        return {
          recipient: r.address,
          status: 'delivered' as const,
          reply: { code: 250, enhanced: '2.0.0', text: 'OK' },
          ...(dsnHandoff === undefined ? {} : { dsnHandoff }),
        };
      }),
    });
    await sendMail(s.port, {
      from: 'alice@example.net',
      to: ['bob@example.com', 'carol@example.com'],
      rcptParams: ['NOTIFY=SUCCESS', 'NOTIFY=SUCCESS'],
    });
    await s.queue.runDue();
    const { parts } = parseMultipart(onlyBounce(d).message);
    const groups = parseFieldGroups(parts[1]?.body ?? '');
    expect(groups.slice(1).map((g) => [g.get('final-recipient'), g.get('action')])).toEqual([
      ['rfc822; bob@example.com', 'relayed'],
    ]);
  });

  it('never bounces to the null reverse-path, and drops a bounce of a bounce', async () => {
    const { d, s } = await setup(store);
    // A message from <> that fails: no bounce.
    await sendMail(s.port, { from: '', to: ['nobody@example.com'] });
    await s.queue.runDue();
    expect(d.seen.map((x) => [x.job.from, x.recipients])).toEqual([['', ['nobody@example.com']]]);

    // A bounce that fails in turn: dropped, not bounced again.
    await sendMail(s.port, { from: 'nobody-sender@example.org', to: ['nobody@example.com'] });
    await s.queue.runDue();
    expect(d.seen.slice(1).map((x) => [x.job.from, x.recipients])).toEqual([
      ['nobody-sender@example.org', ['nobody@example.com']],
      ['', ['nobody-sender@example.org']],
    ]);
    expect(await s.queue.list()).toEqual([]);
  });
});
