import { describe, expect, it } from 'vitest';
import type { TlsSessionEvent } from '../outbound/tls-report.ts';
import { PendingCounters } from './pending.ts';

const AT = Date.parse('2026-03-02T23:59:59.999Z');
const base: TlsSessionEvent = {
  policyDomain: 'Example.NET.',
  policyType: 'sts',
  policyStrings: ['version: STSv1', 'mode: testing'],
  mxHosts: ['*.example.net'],
  result: 'success',
  at: AT,
};

describe('PendingCounters', () => {
  it('counts per UTC day, domain, policy, result and failure details', () => {
    const p = new PendingCounters(10);
    p.add(base);
    p.add(base);
    p.add({ ...base, at: AT + 1 });
    p.add({
      ...base,
      result: 'certificate-expired',
      receivingIp: '192.0.2.1',
      receivingMxHostname: 'MX.example.net',
    });
    const rows = p.take();
    expect(rows).toHaveLength(3);
    expect(rows).toContainEqual({
      day: '2026-03-02',
      domain: 'example.net',
      policy: JSON.stringify(['sts', ['version: STSv1', 'mode: testing'], ['*.example.net']]),
      result: 'success',
      detail: '{}',
      count: 2,
    });
    expect(rows.find((r) => r.day === '2026-03-03')?.count).toBe(1);
    expect(JSON.parse(rows.find((r) => r.result === 'certificate-expired')?.detail ?? '')).toEqual({
      'receiving-mx-hostname': 'mx.example.net',
      'receiving-ip': '192.0.2.1',
    });
    expect(p.take()).toEqual([]);
  });

  it('folds failures beyond maxFailureGroups into their result type without details', () => {
    const p = new PendingCounters(1);
    p.add({ ...base, result: 'validation-failure', receivingIp: '192.0.2.1' });
    p.add({ ...base, result: 'validation-failure', receivingIp: '192.0.2.2' });
    p.add({ ...base, result: 'validation-failure', receivingIp: '192.0.2.1' });
    expect(p.take().map((r) => [r.detail, r.count])).toEqual([
      ['{"receiving-ip":"192.0.2.1"}', 2],
      ['{}', 1],
    ]);
  });

  it('takes back the rows of a failed flush, adding to what was counted since', () => {
    const p = new PendingCounters(10);
    p.add(base);
    const rows = p.take();
    p.add(base);
    p.restore(rows);
    expect(p.take().map((r) => r.count)).toEqual([2]);
  });

  it('refuses events it cannot place', () => {
    const p = new PendingCounters(10);
    expect(p.add({ ...base, at: Number.NaN })).toBe(false);
    expect(p.add({ ...base, policyDomain: ' ' })).toBe(false);
    expect(p.size).toBe(0);
  });
});
