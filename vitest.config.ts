import { defineConfig } from 'vitest/config';

// `mailframe` and `mailframe/testkit` (imported by the examples) resolve to the
// TypeScript sources through the package's "mailframe-source" export condition,
// so tests need no build. The rest is Vite's default list for server code.
const conditions = ['mailframe-source', 'module', 'node', 'development|production'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    include: ['test/**/*.test.ts', 'plugins/**/*.test.ts', 'examples/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    testTimeout: 20000,
    hookTimeout: 20000,
    pool: 'forks',
  },
});
