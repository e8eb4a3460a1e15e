// examples/block-sender-domains/index.ts
import { definePlugin, reply } from 'mailframe';
import Type from 'typebox';

export default definePlugin({
  name: 'block-sender-domains',
  schema: Type.Object({ domains: Type.Array(Type.String(), { default: [] }) }),
  register(api, config) {
    const blocked = new Set(config.domains.map((d) => d.toLowerCase()));
    api.hooks.mail.tap((_tx, from) => {
      const domain = from.address?.asciiDomain;
      return domain && blocked.has(domain) ? reply(550, '5.7.1', 'Sender domain refused') : undefined;
    });
  },
});
