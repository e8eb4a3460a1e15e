import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const source = (path: string) => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  resolve: {
    // `mailframe` imports (the examples, the example plugin package) run against
    // the TypeScript sources, so tests need no build; tsconfig.json's `paths` does
    // the same for the type checker.
    alias: [
      { find: /^mailframe$/, replacement: source('./core/index.ts') },
      { find: /^mailframe\/testkit$/, replacement: source('./core/testkit.ts') },
      { find: /^mailframe\/plugins\/([a-z0-9-]+)$/, replacement: source('./plugins/$1/index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts', 'plugins/**/*.test.ts', 'examples/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    testTimeout: 20000,
    hookTimeout: 20000,
    pool: 'forks',
    // A temp folder per run; the run fails if a test leaves mailframe-* entries in it.
    globalSetup: ['test/global-setup.ts'],
  },
});
