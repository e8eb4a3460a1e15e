import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../core/log.ts';
import { Journal, LAZY_FLUSH_MS, ZERO_AHEAD } from './journal.ts';
import { messageRecord, scanRecords } from './journal-record.ts';
import { envelopeFor } from './queue-file.ts';

let root = '';
afterEach(async () => {
  vi.useRealTimers();
  if (root) await rm(root, { recursive: true, force: true });
  root = '';
});

async function openJournal(): Promise<Journal> {
  root = await mkdtemp(join(tmpdir(), 'mf-journal-'));
  return (await reopen()).journal;
}

/** Open the journal in `root` again, as a restart after a crash would. */
function reopen(): ReturnType<typeof Journal.open> {
  return Journal.open({ dir: join(root, 'journal'), corruptDir: root, sync: true, log: silentLogger() });
}

function append(journal: Journal, id: string) {
  const body = Buffer.from(`Subject: ${id}\r\n\r\nbody\r\n`);
  const envelope = envelopeFor(
    id,
    {
      from: 'a@example.net',
      recipients: [{ address: 'b@example.com', domain: 'example.com', attributes: {} }],
      attributes: {},
      receivedAt: 0,
    },
    body.length,
  );
  const record = messageRecord(envelope, body);
  return journal.append(record.buffers, record.bodyOffset, body.length);
}

/** The record types in the journal's first segment, in file order. */
async function onDisk(): Promise<string[]> {
  const buf = await readFile(join(root, 'journal', '000000000001.jnl'));
  return scanRecords(buf).entries.map((e) => (e.type === 'release' ? `release ${e.id}` : e.envelope.id));
}

describe('Journal', () => {
  it('writes a release nobody waits for with the next waited write, not on its own', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const journal = await openJournal();
    const a = append(journal, '000000000000000a');
    await a.durable;
    expect(journal.counters.writes).toBe(1);

    await journal.release('000000000000000a', a.slot, false);
    // A real round trip through the file system: a write started now would have landed.
    await onDisk();
    expect(journal.counters.writes).toBe(1);
    expect(await onDisk()).toEqual(['000000000000000a']);

    const b = append(journal, '000000000000000b');
    await b.durable;
    expect(journal.counters.writes).toBe(2);
    expect(await onDisk()).toEqual(['000000000000000a', 'release 000000000000000a', '000000000000000b']);
  });

  it('zero-fills the segment ahead of its appends, and a restart reads the zeros as its clean end', async () => {
    const journal = await openJournal();
    const ids = ['000000000000000a', '000000000000000b', '000000000000000c'];
    for (const id of ids) await append(journal, id).durable;
    const file = join(root, 'journal', '000000000001.jnl');
    // The first fill starts after the records already waiting when the file opened: wait for it.
    await vi.waitFor(async () => expect((await stat(file)).size).toBeGreaterThanOrEqual(ZERO_AHEAD), {
      timeout: 5000,
    });
    expect(await onDisk()).toEqual(ids);

    // No close: what a crash leaves. Every record comes back, and nothing is taken for damage.
    const again = await reopen();
    expect(again.recovered.map((m) => m.envelope.id)).toEqual(ids);
    expect(await readdir(root)).toEqual(['journal']);
    await again.journal.close();
    await journal.close();
  });

  it('writes a lone release after the lazy delay, and at close', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const journal = await openJournal();
    const a = append(journal, '000000000000000a');
    const b = append(journal, '000000000000000b');
    await Promise.all([a.durable, b.durable]);

    await journal.release('000000000000000a', a.slot, false);
    vi.advanceTimersByTime(LAZY_FLUSH_MS);
    await vi.waitFor(async () => expect(await onDisk()).toContain('release 000000000000000a'), {
      timeout: 5000,
    });

    await journal.release('000000000000000b', b.slot, false);
    await journal.close();
    // Nothing live is left, so close deleted the segment: the release went out before that.
    await expect(onDisk()).rejects.toThrow(/ENOENT/);
    expect(journal.counters.writes).toBe(3);
  });
});
