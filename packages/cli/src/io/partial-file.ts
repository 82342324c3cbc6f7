import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { syncDir } from '@cairn/core';
import { createOwnedTempDir } from './owned-temp-dir.js';

/**
 * A file a command writes whole under a name the user gave (`volume export`, `backup export
 * --archive`), out of sight until complete (createPartialFile).
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
  };
}
