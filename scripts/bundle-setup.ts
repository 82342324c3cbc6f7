/**
 * vitest globalSetup: rebuilds the `cairn` bundle from the current dist before any test runs, so
 * tests that run bin/cairn.js run the code that was just built (`tsc -b`), never an older bundle.
 */
// @ts-expect-error: a plain ES module of the repository's scripts, without types
import { bundleCairn } from './bundle.mjs';

export default async function setup(): Promise<void> {
  await bundleCairn();
}
