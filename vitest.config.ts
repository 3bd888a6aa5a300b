import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // The workspace packages are tested from their source (as tsconfig's paths type-check them); the
  // package tests also build, pack and install them to check what users get.
  resolve: {
    alias: {
      '@gatehouse/verify': fileURLToPath(new URL('./packages/verify/src/index.ts', import.meta.url)),
      '@gatehouse/web': fileURLToPath(new URL('./packages/web/src/index.ts', import.meta.url)),
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Each file starts its own Gatehouse (and database); two cores → two workers.
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
    // CI (CI=true) also writes a JSON report, from which .ci/run prints one plain "N passed, N failed" line.
    ...(process.env.CI ? { reporters: ['default', 'json'], outputFile: { json: 'test-results/vitest.json' } } : {}),
  },
});
