import { describe, expect, it } from 'vitest';
import { parseAnswer } from './client.ts';
import { resultSymbols, spamdResultField } from './fields.ts';

describe('rspamd fields', () => {
  it('turns recorded SPF, DKIM and DMARC results into rspamd symbols, DMARC fail by the domain policy', () => {
    const r = (check: string, result: string, extra: object = {}) => ({
      check,
      result: { result, ...extra } as never,
    });
    expect(
      resultSymbols([
        r('spf', 'softfail'),
        r('dkim', 'pass'),
        r('dkim', 'pass'),
        r('dkim', 'neutral'),
        r('dmarc', 'fail', { policy: 'quarantine' }),
        r('sender-mx', 'fail'),
      ]),
    ).toEqual(['R_SPF_SOFTFAIL', 'R_DKIM_ALLOW', 'DMARC_POLICY_QUARANTINE']);
    expect(resultSymbols([r('dmarc', 'fail')])).toEqual(['DMARC_POLICY_SOFTFAIL']);
  });

  it('writes X-Spamd-Result one symbol per folded line, options made printable ASCII and cut short', () => {
    const answer = parseAnswer(
      JSON.stringify({
        action: 'add header',
        score: 7.5,
        required_score: 15,
        symbols: {
          Z_SYM: { name: 'Z_SYM', score: 1 },
          A_SYM: {
            name: 'A_SYM',
            score: 2.25,
            options: ['evil\r\nX-Injected: yes', 'caf\u00e9', 'x'.repeat(300)],
          },
        },
      }),
    );
    const field = spamdResultField(answer);
    expect(field.split('\r\n')).toHaveLength(3);
    expect(field).toMatch(
      /^X-Spamd-Result: default: True \[7\.50 \/ 15\.00\];\r\n\tA_SYM\(2\.25\)\[evil\?\?X-Injected: yes,caf\?,x+\.\.\.\];\r\n\tZ_SYM\(1\.00\)$/,
    );
    expect(field.split('\r\n')[1]?.length).toBeLessThan(130);
  });

  it('refuses an answer without action or score', () => {
    expect(() => parseAnswer('{"score":1}')).toThrow(/no action or score/);
    expect(() => parseAnswer('<html>')).toThrow(/not JSON/);
  });
});
