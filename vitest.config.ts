import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Each file starts its own Gatehouse (and database); two cores → two workers.
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
});
