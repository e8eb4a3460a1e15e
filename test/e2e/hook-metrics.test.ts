import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../../core/plugin.ts';
import { useScope } from '../helpers/scope.ts';

const scope = useScope();

const flaky = definePlugin({
  name: 'flaky',
  schema: Type.Object({}),
  register(api) {
    api.hooks.rcpt.tap((_tx, to) => {
      if (to.address.localPart === 'boom') throw new Error('internal detail');
      if (to.address.localPart === 'slow') return new Promise(() => {});
      return undefined;
    });
  },
});

describe('hook metrics', () => {
  it('count calls, failures and timeouts per plugin and hook', async () => {
    const t = await scope.start({ plugins: [{ plugin: flaky, timeout: 150 }, 'rcpt-local'] });
    const c = await t.connect();
    await c.expect('EHLO client.example', 250);
    await c.expect('MAIL FROM:<a@b.example>', 250);
    await c.expect('RCPT TO:<ok@localhost>', 250);
    await c.expect('RCPT TO:<boom@localhost>', 451, '4.3.0');
    await c.expect('RCPT TO:<slow@localhost>', 451, '4.3.0');
    await c.close();
    const metrics = t.server.hookMetrics();
    expect(metrics.find((m) => m.plugin === 'flaky' && m.hook === 'rcpt')).toEqual({
      plugin: 'flaky',
      hook: 'rcpt',
      calls: 3,
      failures: 1,
      timeouts: 1,
      faults: 0,
    });
    // rcpt-local answered only the recipient that reached it.
    expect(metrics.find((m) => m.plugin === 'rcpt-local' && m.hook === 'rcpt')?.calls).toBe(1);
    // Hooks a plugin never tapped are not listed.
    expect(metrics.some((m) => m.plugin === 'flaky' && m.hook !== 'rcpt')).toBe(false);
  });
});
