#!/usr/bin/env node
// The `mailframe` command. Installed from npm, it runs the built JavaScript in
// dist/. In a clone of the repository (where the TypeScript sources are; the
// package ships none), it runs bin/mailframe.ts with Node's type stripping and
// resolves `mailframe` imports (examples, your plugins) to the sources too,
// through the package's "mailframe-source" export condition: no build needed.
import { existsSync } from 'node:fs';
import { registerHooks } from 'node:module';

const source = new URL('./mailframe.ts', import.meta.url);
if (existsSync(source)) {
  registerHooks({
    resolve: (specifier, context, next) =>
      next(specifier, { ...context, conditions: [...context.conditions, 'mailframe-source'] }),
  });
  await import(source.href);
} else {
  await import('../dist/bin/mailframe.js');
}
