/** The policy model's pure parts: result values, action validation, the Authentication-Results format. */
import { describe, expect, it } from 'vitest';
import { authenticationResults, resinfo } from '../../plugins/auth-results/format.ts';
import { asResultValue, validateActions } from '../../plugins/policy/policy.ts';

describe('policy model', () => {
  it('knows the seven result values and the old spelling of temperror', () => {
    expect(asResultValue('softfail')).toBe('softfail');
    expect(asResultValue('temperr')).toBe('temperror');
    expect(asResultValue('policy')).toBeUndefined();
  });

  it('refuses reply codes of the wrong class for the action', () => {
    expect(() => validateActions('spf', { fail: { action: 'tempfail', code: 550 } })).toThrow(
      'spf actions.fail: tempfail needs a 4xx code, not 550',
    );
    expect(() => validateActions('spf', { fail: { action: 'reject', code: 554 } })).not.toThrow();
  });

  it('formats RFC 8601 clauses, quoting values that are neither tokens nor addresses', () => {
    expect(
      resinfo({
        check: 'dkim',
        result: { result: 'pass', properties: { 'header.d': 'example.org', 'header.b': 'abc/def=' } },
      }),
    ).toBe('dkim=pass header.d=example.org header.b="abc/def="');
    expect(
      resinfo({ check: 'x', result: { result: 'none', method: 'iprev', reason: 'a "b" \\ c\u00e9' } }),
    ).toBe('iprev=none reason="a \\"b\\" \\\\ c?"');
    expect(authenticationResults('mx.example', [])).toBe('Authentication-Results: mx.example; none');
  });
});
