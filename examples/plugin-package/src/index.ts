/**
 * A mailframe plugin published as its own npm package. It adds one header
 * field to every accepted message, e.g. `X-Stamp: relay-eu-1`.
 *
 * The package's main export is the plugin definition, so a mailframe.json
 * loads it by package name: `{ "plugin": "mailframe-plugin-stamp" }`.
 */
import { definePlugin } from 'mailframe';
import Type from 'typebox';

export const schema = Type.Object(
  {
    field: Type.String({
      pattern: '^[!-9;-~]+$',
      default: 'X-Stamp',
      description: 'Header field name to add (printable ASCII, no colon).',
    }),
    value: Type.String({
      pattern: '^[ -~]*$',
      minLength: 1,
      description: 'Its value: printable ASCII on one line, e.g. the name of this node.',
    }),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'stamp',
  description: 'Adds a fixed header field to every accepted message.',
  schema,
  register(api, config) {
    const line = `${config.field}: ${config.value}`;
    api.hooks.headers.tap((fields) => [...fields, line]);
  },
});
