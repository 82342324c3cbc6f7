import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { objectStoreSuite } from '@cairn/conformance';
import type { ObjectStore } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';

// A fresh temporary directory per case: the factory makes it, dispose removes it. Something that
// is no object at a key's place: a FIFO (foreign-files.test.ts covers symbolic links and sockets).
objectStoreSuite('PosixObjectStore', {
  factory: async () => PosixObjectStore.open({ directory: await mkdtemp(join(tmpdir(), 'cairn-posix-conf-')) }),
  dispose: async (store: ObjectStore) => rm((store as PosixObjectStore).directory, { recursive: true, force: true }),
  capabilities: new PosixObjectStore({ directory: tmpdir() }).capabilities,
  plantForeign: async (store: ObjectStore, key: string) => {
    const path = (store as PosixObjectStore).pathOf(key);
    await mkdir(dirname(path), { recursive: true });
    execFileSync('mkfifo', [path]);
  },
});
