import { describe, expect, it } from 'vitest';
import { splitAddress } from '../../plugins/deliver-maildir/mailbox-path.ts';

describe('deliver-maildir splitAddress', () => {
  it('unquotes a quoted local part, escapes included', () => {
    expect(splitAddress('"a\\"b c"@Example.org', 'local')).toEqual({ local: 'a"b c', domain: 'Example.org' });
  });

  it('keeps a plain local part, and a lone quote, as they are; no @ takes the fallback domain', () => {
    expect(splitAddress('alice@example.org', 'local')).toEqual({ local: 'alice', domain: 'example.org' });
    expect(splitAddress('"', 'local')).toEqual({ local: '"', domain: 'local' });
  });
});
