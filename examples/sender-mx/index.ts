// examples/sender-mx/index.ts: a custom check on the policy model (docs/policy.md)
import { definePlugin } from 'mailframe';
import { actionsSchema, type CheckResult, report } from 'mailframe/policy';
import Type from 'typebox';

declare module 'mailframe/policy' {
  interface PolicyChecks {
    'sender-mx': CheckResult;
  }
}

export default definePlugin({
  name: 'sender-mx',
  schema: Type.Object({ actions: actionsSchema('sender-mx', { fail: { action: 'reject' } }) }),
  register(api, config) {
    api.hooks.mail.tap(async (tx, from) => {
      const domain = from.address?.asciiDomain;
      if (domain === undefined) return report(tx, 'sender-mx', { result: 'none' }, config.actions);
      const mx = await api.server.dns.lookup(domain, 'MX');
      const result = mx.kind === 'answer' ? 'pass' : mx.kind === 'error' ? 'temperror' : 'fail';
      return report(tx, 'sender-mx', { result, properties: { 'smtp.mailfrom': domain } }, config.actions);
    });
  },
});
