/**
 * vitest globalSetup: rebuilds the `cairn` bundle from the current dist before any test runs, so
 * tests that run bin/cairn.js run the code that was just built (`tsc -b`), never an older bundle.
 */
// @ts-expect-error: a plain ES module of the repository's scripts, without types
import { bundleProgram } from './bundle.mjs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export default async function setup(): Promise<void> {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  await bundleProgram({ entry: join(root, 'packages/cli/dist/main.js'), outdir: join(root, 'packages/cli/bundle'), name: 'cairn' });
}
