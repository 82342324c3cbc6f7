import { defineConfig } from 'vitest/config';
import NoSkipReporter from './scripts/no-skip-reporter.js';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'plugins/*/test/**/*.test.ts', 'conformance-tests/test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // The cairn bundle that CLI tests run is made from the dist just built (scripts/bundle-setup.ts).
    globalSetup: ['./scripts/bundle-setup.ts'],
    reporters: ['default', new NoSkipReporter()],
  },
});
