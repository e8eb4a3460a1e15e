/**
 * The queue's promise under SIGKILL: every message that got a 250 is in the
 * queue exactly once and intact after a restart; nothing that did not get as
 * far as the final dot is. A message whose 250 was lost with the connection
 * may be either way (counted apart). Messages are delivered to Maildir while
 * the kills happen: every recipient gets exactly one copy, none twice.
 */
import { describe, expect, it } from 'vitest';
import { runCrashScenario } from './crash-harness.ts';

describe('queue-fs under SIGKILL', () => {
  it('keeps every acknowledged message exactly once, intact, queued or delivered to Maildir once per recipient, across kills during DATA, after the final dot and right after a 250', async () => {
    const report = await runCrashScenario({
      messages: 30,
      senders: 3,
      kills: ['during-data', 'after-dot', 'after-ack'],
      bigEvery: 10,
    });
    expect(report.problems).toEqual([]);
    expect(report.kills).toBe(4);
    expect(report.acked).toBeGreaterThan(0);
    expect(report.aborted).toBeGreaterThan(0); // the kill during DATA cut a message short
    expect(report.lost).toBe(0);
    expect(report.duplicates).toBe(0);
    expect(report.damaged).toBe(0);
    expect(report.unexpected).toBe(0);
    expect(report.corruptFiles).toBe(0);
    expect(report.tmpLeftovers).toBe(0);
    expect(report.delivered).toBeGreaterThan(0);
    expect(report.maildirDuplicates).toBe(0);
    expect(report.maildirTmpLeftovers).toBe(0);
    expect(report.cliAgrees).toBe(true);
  }, 90_000);
});
