import { rmSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { syncDir, writeNewFileDurably } from '@cairn/core';
import { createOwnedTempDir } from './owned-temp-dir.js';

/**
 * A file a command writes whole under a name the user gave (`volume export`, `backup export
 * --archive`, `cairn init`'s config), out of sight until complete (createPartialFile).
 */
export interface PartialFile {
  /** Where to write it: `<dir of file>/.cairn-partial-XXXXXX/<name of file>`; nothing is there yet. */
  readonly path: string;
  /**
   * Renames the written (and fsynced: the caller's) file over the named file, removes the private
   * directory and fsyncs the named file's directory. A failed rename leaves everything for discard.
   */
  publish(): Promise<void>;
  /** Removes the private directory and what it holds. Idempotent; never rejects. */
  discard(): Promise<void>;
  /** discard, synchronously: for a signal handler that ends the process. Never throws. */
  discardSync(): void;
}

/**
 * Makes the private directory in which `file` is written before it is renamed into place: an
 * owned `.cairn-partial-XXXXXX` beside it (createOwnedTempDir: mode 0700, naming this process),
 * so the name itself is never half-written, and of two writers to one name the last rename wins,
 * whole. A writer killed outright (SIGKILL, the OOM killer) cannot remove its directory; making
 * one first removes those beside `file` whose owner is certainly dead (removeDeadTempDirs), never
 * a live writer's. Rejects with the system error when the directory cannot be made (a missing or
 * read-only directory, a full disk): nothing is left then.
 */
export async function createPartialFile(file: string): Promise<PartialFile> {
  const dir = await createOwnedTempDir('.cairn-partial-', dirname(file));
  const path = join(dir, basename(file));
  const discard = () => rm(dir, { recursive: true, force: true }).catch(() => {});
  return {
    path,
    async publish() {
      await rename(path, file);
      await discard();
      await syncDir(dirname(file));
    },
    discard,
    discardSync() {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // Left behind, it is removed by a later sweep once its owner is dead.
      }
    },
  };
}

/**
 * Writes `data` as the file `file` whole, replacing what is there (createPartialFile: written in
 * its private directory, fsynced, renamed over `file`, directory fsynced): `file` holds its old
 * content or all of `data`, never a part. On failure the private directory is removed and the
 * system error thrown; one a process killed outright leaves is removed by a later sweep.
 */
export async function writeFileWhole(file: string, data: Uint8Array | string): Promise<void> {
  const partial = await createPartialFile(file);
  try {
    await writeNewFileDurably(partial.path, data);
    await partial.publish();
  } finally {
    await partial.discard();
  }
}
