/**
 * The two kinds of object store repository tests run over: the memory store and the real posix
 * store. Pure test scaffolding.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { afterEach } from 'vitest';
import { MemoryObjectStore, type ObjectStore } from '../src/index.js';

/** A name (for describe.each's `%s`) and a maker of a new, empty store of that kind. */
export type StoreKind = [string, () => Promise<ObjectStore>];

/**
 * 'memory store' and 'posix store' (each made in a new directory under the system temp dir named
 * `cairn-<prefix>-…`). Call at the top level of a test file: it registers an afterEach there that
 * removes every directory made during the test.
 */
export function memoryAndPosixStores(prefix: string): StoreKind[] {
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });
  return [
    ['memory store', async () => new MemoryObjectStore('mem')],
    [
      'posix store',
      async () => {
        const directory = await mkdtemp(join(tmpdir(), `cairn-${prefix}-`));
        dirs.push(directory);
        return PosixObjectStore.open({ directory });
      },
    ],
  ];
}
