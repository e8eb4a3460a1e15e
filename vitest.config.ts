import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'plugins/**/*.test.ts', 'examples/**/*.test.ts'],
    testTimeout: 20000,
    hookTimeout: 20000,
    pool: 'forks',
    // A temp folder per run; the run fails if a test leaves mailframe-* entries in it.
    globalSetup: ['test/global-setup.ts'],
  },
});
