/**
 * deliver-maildir on a temp directory: files read back byte for byte,
 * unique names, per-recipient results, no escape from the root.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isReply } from '../../core/hooks.ts';
import type { DeliveryReport } from '../../core/types.ts';
import { replyForFsError } from '../../plugins/deliver-maildir/index.ts';
import { deliveryTag } from '../../plugins/deliver-maildir/maildir-writer.ts';
import { mountTmpfs } from '../helpers/tmpfs.ts';
import { type DeliveryServer, deliveryJob, startDeliveryServer } from './deliver-helpers.ts';

let mf: DeliveryServer | undefined;
let base: string | undefined;
afterEach(async () => {
  await mf?.close();
  if (base) await rm(base, { recursive: true, force: true });
  mf = undefined;
  base = undefined;
});

const MESSAGE = 'Received: from a by b\r\nSubject: maildir\r\n\r\nline\r\n.dot\r\nlone\rcr\r\n';
const NAME = /^(\d+)\.M\d+P\d+X[0-9a-f]{32}\.mx\.test\.example,S=(\d+)$/;

async function setup(config: Record<string, unknown>): Promise<{ server: DeliveryServer; root: string }> {
  base = await mkdtemp(join(tmpdir(), 'mailframe-maildir-'));
  const root = join(base, 'mail');
  await mkdir(root);
  mf = await startDeliveryServer([
    { plugin: 'deliver-maildir', config: { root, domains: ['example.com'], ...config } },
  ]);
  return { server: mf, root };
}

async function deliver(server: DeliveryServer, job: ReturnType<typeof deliveryJob>): Promise<DeliveryReport> {
  const report = await server.server.outbound.deliver(job);
  if (report === undefined || isReply(report))
    throw new Error(`expected a report, got ${JSON.stringify(report)}`);
  return report;
}

/** The one file in `<maildir>/new`, checked against the naming rules; tmp left empty. */
async function onlyMessage(maildir: string): Promise<{ name: string; data: Buffer }> {
  const names = await readdir(join(maildir, 'new'));
  expect(names).toHaveLength(1);
  expect(await readdir(join(maildir, 'tmp'))).toEqual([]);
  expect(await readdir(join(maildir, 'cur'))).toEqual([]);
  const name = names[0] as string;
  const data = await readFile(join(maildir, 'new', name));
  const m = NAME.exec(name);
  expect(m).not.toBeNull();
  expect(Number(m?.[2])).toBe(data.length);
  return { name, data };
}

describe('deliver-maildir', () => {
  it('writes Return-Path, Delivered-To and the message with LF line endings into new/', async () => {
    const { server, root } = await setup({});
    const report = await deliver(
      server,
      deliveryJob({
        from: 'sender@origin.example',
        to: ['Alice@Example.com', 'bob@example.com'],
        message: MESSAGE,
      }),
    );
    expect(report.results.map((r) => [r.recipient, r.status, r.reply?.code])).toEqual([
      ['Alice@Example.com', 'delivered', 250],
      ['bob@example.com', 'delivered', 250],
    ]);
    const alice = await onlyMessage(join(root, 'example.com', 'alice', 'Maildir'));
    expect(alice.data.toString('latin1')).toBe(
      'Return-Path: <sender@origin.example>\nDelivered-To: Alice@Example.com\n' +
        'Received: from a by b\nSubject: maildir\n\nline\n.dot\nlone\rcr\n',
    );
    const bob = await onlyMessage(join(root, 'example.com', 'bob', 'Maildir'));
    expect(bob.data.toString('latin1')).toContain('Delivered-To: bob@example.com\n');
    expect(bob.name).not.toBe(alice.name);
    expect((await stat(join(root, 'example.com', 'bob', 'Maildir', 'new', bob.name))).mode & 0o777).toBe(
      0o600,
    );
  });

  it('keeps the octets as received with lineEndings: crlf; the null sender is <>', async () => {
    const { server, root } = await setup({ lineEndings: 'crlf', layout: 'users/{user}' });
    const report = await deliver(
      server,
      deliveryJob({ from: '', to: ['carol+lists@example.com'], message: MESSAGE }),
    );
    expect(report.results[0]?.status).toBe('delivered');
    const { data } = await onlyMessage(join(root, 'users', 'carol'));
    expect(
      data.equals(Buffer.from(`Return-Path: <>\r\nDelivered-To: carol+lists@example.com\r\n${MESSAGE}`)),
    ).toBe(true);
  });

  it('never leaves the root, whatever the local part says', async () => {
    const { server, root } = await setup({});
    const report = await deliver(
      server,
      deliveryJob({
        to: ['"../../../escape"@example.com', '..@example.com', 'a/b\\c@example.com'],
        message: MESSAGE,
      }),
    );
    expect(report.results.map((r) => r.status)).toEqual(['delivered', 'delivered', 'delivered']);
    // Nothing next to the root: only what was there before.
    expect(await readdir(base as string)).toEqual(['mail']);
    const users = (await readdir(join(root, 'example.com'))).sort();
    expect(users).toHaveLength(3);
    for (const u of users) expect(u.startsWith('.')).toBe(false);
    expect(users.join(' ')).not.toMatch(/[/\\]/);
    expect(users).toContain('a_b_c');
  });

  it('with createMissing false, a missing mailbox fails alone (550 5.1.1)', async () => {
    const { server, root } = await setup({ createMissing: false });
    for (const sub of ['tmp', 'new', 'cur'])
      await mkdir(join(root, 'example.com', 'dave', 'Maildir', sub), { recursive: true });
    const report = await deliver(
      server,
      deliveryJob({ to: ['nobody@example.com', 'dave@example.com'], message: MESSAGE }),
    );
    expect(report.results.map((r) => [r.recipient, r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['nobody@example.com', 'failed', 550, '5.1.1'],
      ['dave@example.com', 'delivered', 250, '2.0.0'],
    ]);
    await onlyMessage(join(root, 'example.com', 'dave', 'Maildir'));
    expect(await readdir(join(root, 'example.com'))).toEqual(['dave']);
  });

  it('a mailbox that cannot be written is deferred without failing the others', async () => {
    const { server, root } = await setup({});
    // A file where the directory should be.
    await mkdir(join(root, 'example.com', 'erin'), { recursive: true });
    await writeFile(join(root, 'example.com', 'erin', 'Maildir'), 'not a directory');
    const report = await deliver(
      server,
      deliveryJob({ to: ['erin@example.com', 'frank@example.com'], message: MESSAGE }),
    );
    expect(report.results.map((r) => [r.recipient, r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
      ['erin@example.com', 'deferred', 451, '4.3.0'],
      ['frank@example.com', 'delivered', 250, '2.0.0'],
    ]);
  });

  it('a mailboxes map names the only deliverable addresses', async () => {
    const { server, root } = await setup({ mailboxes: { 'Postmaster@example.com': 'admin/Maildir' } });
    const report = await deliver(
      server,
      deliveryJob({ to: ['postmaster@EXAMPLE.com', 'other@example.com'], message: MESSAGE }),
    );
    expect(report.results.map((r) => [r.status, r.reply?.code])).toEqual([
      ['delivered', 250],
      ['failed', 550],
    ]);
    await onlyMessage(join(root, 'admin', 'Maildir'));
  });

  it('claims routed jobs and its own domains only', async () => {
    const { server } = await setup({});
    expect(
      await server.server.outbound.deliver(deliveryJob({ to: ['a@other.example'], message: MESSAGE })),
    ).toBeUndefined();
    expect(
      await server.server.outbound.deliver(
        deliveryJob({ to: ['a@example.com'], message: MESSAGE, route: 'relay-smarthost' }),
      ),
    ).toBeUndefined();
  });

  it('maps file-system errors: ENOSPC 452 4.3.1, EDQUOT 452 4.2.2, others 451 4.3.0', () => {
    const err = (code: string) => Object.assign(new Error(code), { code });
    expect(replyForFsError(err('ENOSPC'))).toMatchObject({ code: 452, enhanced: '4.3.1' });
    expect(replyForFsError(err('EDQUOT'))).toMatchObject({ code: 452, enhanced: '4.2.2' });
    expect(replyForFsError(err('EACCES'))).toMatchObject({ code: 451, enhanced: '4.3.0' });
    expect(String(replyForFsError(err('EIO')).text)).not.toContain('EIO');
  });
});

describe('deliver-maildir across crashes and failures', () => {
  const maildirFiles = async (maildir: string) => ({
    tmp: await readdir(join(maildir, 'tmp')),
    new: await readdir(join(maildir, 'new')),
    cur: await readdir(join(maildir, 'cur')),
  });

  it('delivers a message to a recipient once: a repeat after a crash finds the copy in new/ or, moved by a reader, in cur/', async () => {
    const { server, root } = await setup({});
    const maildir = join(root, 'example.com', 'alice', 'Maildir');
    // Queued before this server started, as after a restart: the run before may have delivered it already.
    const job = (id: string, attempts = 0) =>
      deliveryJob({
        id,
        to: ['alice@example.com'],
        message: MESSAGE,
        receivedAt: Date.now() - 60_000,
        attempts,
      });
    expect((await deliver(server, job('Q1'))).results[0]?.status).toBe('delivered');
    const first = (await maildirFiles(maildir)).new;
    expect(first).toHaveLength(1);
    // Killed before the queue recorded it: the same job comes again and finds the copy in new/.
    expect((await deliver(server, job('Q1'))).results[0]).toMatchObject({ status: 'delivered' });
    expect(await maildirFiles(maildir)).toEqual({ tmp: [], new: first, cur: [] });
    // A mail reader took it to cur/ and flagged it seen; a retry (attempts > 0) finds it there.
    await rename(join(maildir, 'new', first[0] as string), join(maildir, 'cur', `${first[0]}:2,S`));
    expect((await deliver(server, job('Q1', 1))).results[0]).toMatchObject({ status: 'delivered' });
    expect(await maildirFiles(maildir)).toEqual({ tmp: [], new: [], cur: [`${first[0]}:2,S`] });
    // Another message is a delivery of its own.
    await deliver(server, job('Q2'));
    expect((await maildirFiles(maildir)).new).toHaveLength(1);
  });

  it('records each delivery before its link, and a repeat looks up the record instead of listing the Maildir', async () => {
    const { server, root } = await setup({});
    const maildir = join(root, 'example.com', 'alice', 'Maildir');
    const records = join(server.dataDir, 'deliver-maildir', 'delivered');
    // A day of records older than recordDays (7): removed by the next delivery.
    await mkdir(join(records, '2000-01-01'));
    await writeFile(join(records, '2000-01-01', 'a'.repeat(32)), 'old\nrecord\n');
    // Arrived after the records began.
    const job = (id: string, attempts = 0) =>
      deliveryJob({ id, to: ['alice@example.com'], message: MESSAGE, receivedAt: Date.now(), attempts });
    expect((await deliver(server, job('Q1'))).results[0]?.status).toBe('delivered');
    const first = (await maildirFiles(maildir)).new;
    expect(first).toHaveLength(1);
    const days = await readdir(records);
    expect(days).toEqual(['since', new Date().toISOString().slice(0, 10)].sort());
    const tag = deliveryTag({ queueId: 'Q1', recipient: 'alice@example.com' });
    const day = days.find((d) => d !== 'since') as string;
    expect(await readFile(join(records, day, tag), 'utf8')).toBe(`${maildir}\n${first[0]}\n`);
    // The retry of a delivery that never got to new/ has no record: it writes without looking in
    // the Maildir (a file carrying its tag, put there by hand, is not taken for an earlier copy).
    const q2 = deliveryTag({ queueId: 'Q2', recipient: 'alice@example.com' });
    const planted = `1700000000.M1P1X${q2}.mx.test.example,S=5`;
    await writeFile(join(maildir, 'new', planted), 'hand\n');
    const q2Report = await server.server.outbound.deliver(job('Q2', 1));
    expect(isReply(q2Report) ? undefined : q2Report?.results[0]?.status).toBe('delivered');
    expect((await maildirFiles(maildir)).new).toHaveLength(3);
    // The retry of Q1 finds its copy through the record, in new/ ...
    expect((await deliver(server, job('Q1', 1))).results[0]?.status).toBe('delivered');
    expect((await maildirFiles(maildir)).new).toHaveLength(3);
    // ... and, moved by a reader, in cur/.
    await rename(join(maildir, 'new', first[0] as string), join(maildir, 'cur', `${first[0]}:2,S`));
    expect((await deliver(server, job('Q1', 2))).results[0]?.status).toBe('delivered');
    expect(await maildirFiles(maildir)).toMatchObject({ tmp: [], cur: [`${first[0]}:2,S`] });
    expect((await maildirFiles(maildir)).new).toHaveLength(2);
    // Killed between its record and the link: the record names a file that is nowhere; the retry writes it.
    await writeFile(
      join(records, day, deliveryTag({ queueId: 'Q3', recipient: 'alice@example.com' })),
      `${maildir}\n1700000000.M1P1Xnothing.mx.test.example,S=5\n`,
    );
    expect((await deliver(server, job('Q3', 1))).results[0]?.status).toBe('delivered');
    expect((await maildirFiles(maildir)).new).toHaveLength(3);
  });

  it('removes abandoned tmp/ files of its own and any older than 36 hours before delivering, and leaves the rest', async () => {
    const { server, root } = await setup({});
    const maildir = join(root, 'example.com', 'bob', 'Maildir');
    for (const sub of ['tmp', 'new', 'cur']) await mkdir(join(maildir, sub), { recursive: true });
    const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
    const deadPid = Number(child.stdout.toString());
    const tag = 'a'.repeat(32);
    const files = {
      deadWriter: `1700000000.M1P${deadPid}X${tag}.mx.test.example`,
      ancient: '1600000000.M5P77.elsewhere.example',
      liveWriter: `1700000000.M2P${process.ppid}X${tag}.mx.test.example`,
      otherHost: `1700000000.M3P${deadPid}X${tag}.elsewhere.example`,
      foreign: '1700000000.M4P1.elsewhere.example',
    };
    for (const name of Object.values(files)) await writeFile(join(maildir, 'tmp', name), 'partial');
    const old = new Date(Date.now() - 40 * 60 * 60 * 1000);
    await utimes(join(maildir, 'tmp', files.ancient), old, old);
    expect(
      (await deliver(server, deliveryJob({ to: ['bob@example.com'], message: MESSAGE }))).results[0]?.status,
    ).toBe('delivered');
    expect((await readdir(join(maildir, 'tmp'))).sort()).toEqual(
      [files.liveWriter, files.otherHost, files.foreign].sort(),
    );
  });

  it('leaves nothing in tmp/ when the disk fills up during the write (452 4.3.1, deferred)', async () => {
    base = await mkdtemp(join(tmpdir(), 'mailframe-maildir-'));
    const root = join(base, 'mail');
    await mkdir(root);
    const fs = await mountTmpfs(root, 512 * 1024);
    try {
      const maildir = join(root, 'example.com', 'carol', 'Maildir');
      for (const sub of ['tmp', 'new', 'cur']) await mkdir(join(maildir, sub), { recursive: true });
      await fs.fill();
      mf = await startDeliveryServer([
        { plugin: 'deliver-maildir', config: { root, domains: ['example.com'] } },
      ]);
      const big = `Subject: big\r\n\r\n${'y'.repeat(1000)}\r\n`.repeat(1000);
      const report = await deliver(mf, deliveryJob({ to: ['carol@example.com'], message: big }));
      expect(report.results[0]).toMatchObject({
        status: 'deferred',
        reply: { code: 452, enhanced: '4.3.1' },
      });
      expect(await maildirFiles(maildir)).toEqual({ tmp: [], new: [], cur: [] });
    } finally {
      await mf?.close();
      mf = undefined;
      await fs.unmount();
    }
  });
});
