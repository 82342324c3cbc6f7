import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { objectStoreSuite } from '@cairn/conformance';
import type { ObjectStore } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';

// A fresh temporary directory per case: the factory makes it, dispose removes it.
objectStoreSuite('PosixObjectStore', {
  factory: async () => PosixObjectStore.open({ directory: await mkdtemp(join(tmpdir(), 'cairn-posix-conf-')) }),
  dispose: async (store: ObjectStore) => rm((store as PosixObjectStore).directory, { recursive: true, force: true }),
  capabilities: new PosixObjectStore({ directory: tmpdir() }).capabilities,
});
