import { defineConfig } from 'vitest/config';
import NoSkipReporter from './scripts/no-skip-reporter.js';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'plugins/*/test/**/*.test.ts', 'conformance-tests/test/**/*.test.ts'],
    // A bound for a hung test, not a speed check: two test files run at once on 2 cores, and a test
    // spawning many CLI processes took up to 27 s alone on a slow VM.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Both cores: vitest's default for a run is one fewer than the cores, which is one worker here,
    // and most test files wait on child processes, disks and sockets more than they compute.
    maxWorkers: 2,
    // The cairn bundle that CLI tests run is made from the dist just built (scripts/bundle-setup.ts).
    globalSetup: ['./scripts/bundle-setup.ts'],
    reporters: ['default', new NoSkipReporter()],
  },
});
