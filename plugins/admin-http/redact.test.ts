import { describe, expect, it } from 'vitest';
import { schema as rspamdSchema } from '../rspamd/index.ts';
import { schema as spfSchema } from '../spf/index.ts';
import { REDACTED, redact } from './redact.ts';

describe('admin-http redact', () => {
  it('keeps an action map entry named like a secret (SPF `pass`): only values are secrets, not structures', () => {
    const config = { actions: { pass: { action: 'accept' }, fail: { action: 'reject' } } };
    expect(redact(config, spfSchema)).toEqual(config);
  });

  it('still hides a value under a secret key name, and anything the schema marks writeOnly', () => {
    expect(redact({ password: 'hunter2', nested: { token: 42 } }, undefined)).toEqual({
      password: REDACTED,
      nested: { token: REDACTED },
    });
    expect(redact({ password: 'hunter2', url: 'http://127.0.0.1:11333' }, rspamdSchema)).toEqual({
      password: REDACTED,
      url: 'http://127.0.0.1:11333',
    });
  });

  it('hides the password of a URL and secret query parameters, keeping the rest of the URL', () => {
    expect(
      redact(
        {
          url: 'http://scan:s3cret@rspamd.example.net:11333/',
          dsn: 'postgres://mail:p@ss@db.example.net/mail?sslmode=require&password=hunter2',
          plain: 'https://user@example.net/x?apiKey=abc&q=1',
          text: 'not a url: a:b@c',
        },
        undefined,
      ),
    ).toEqual({
      url: `http://scan:${REDACTED}@rspamd.example.net:11333/`,
      dsn: `postgres://mail:${REDACTED}@db.example.net/mail?sslmode=require&password=${REDACTED}`,
      plain: `https://user@example.net/x?apiKey=${REDACTED}&q=1`,
      text: 'not a url: a:b@c',
    });
  });
});
