import { describe, expect, it } from 'vitest';
import { parsePolicyRecords } from './policy-record.ts';

describe('parsePolicyRecords (RFC 8460 section 3)', () => {
  it('reads one record with several rua URIs, mailto and https', () => {
    const r = parsePolicyRecords([
      'v=spf1 -all',
      'v=TLSRPTv1; rua=mailto:tls%2Dreports@example.com , https://reports.example.com/v1/tlsrpt ;',
    ]);
    expect(r).toEqual({
      kind: 'policy',
      record: 'v=TLSRPTv1; rua=mailto:tls%2Dreports@example.com , https://reports.example.com/v1/tlsrpt ;',
      endpoints: [
        { kind: 'mailto', uri: 'mailto:tls%2Dreports@example.com', address: 'tls-reports@example.com' },
        { kind: 'https', uri: 'https://reports.example.com/v1/tlsrpt' },
      ],
    });
  });

  it('ignores extension fields and mailto headers', () => {
    const r = parsePolicyRecords(['v=TLSRPTv1;ext=1;rua=mailto:a@example.com?subject=x']);
    expect(r).toMatchObject({ kind: 'policy', endpoints: [{ kind: 'mailto', address: 'a@example.com' }] });
  });

  it('skips URIs of other schemes, and is no policy when none is left', () => {
    expect(parsePolicyRecords(['v=TLSRPTv1; rua=http://x.example/,mailto:a@example.com'])).toMatchObject({
      kind: 'policy',
      endpoints: [{ kind: 'mailto' }],
    });
    expect(parsePolicyRecords(['v=TLSRPTv1; rua=http://x.example/'])).toMatchObject({ kind: 'none' });
  });

  it('is no policy without exactly one well-formed v=TLSRPTv1 record', () => {
    const none = (txt: string[]) => expect(parsePolicyRecords(txt).kind).toBe('none');
    none([]);
    none(['v=spf1 -all']);
    none(['v=TLSRPTv1; rua=mailto:a@example.com', 'v=TLSRPTv1; rua=mailto:b@example.com']);
    none(['v=TLSRPTv1']);
    none(['v=TLSRPTv1;']);
    none(['v=tlsrptv1; rua=mailto:a@example.com']);
    none(['v=TLSRPTv10; rua=mailto:a@example.com']);
    none(['v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com']);
    none(['v=TLSRPTv1; rua=mailto:a@example.com,']);
    none(['v=TLSRPTv1; rua=mailto:not-an-address']);
    none(['v=TLSRPTv1; garbage']);
  });
});
