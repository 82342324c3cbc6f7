import { rename } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CairnError, syncDir, toCairnError, writeNewFileDurably } from '@cairn/core';
import { createOwnedTempDir, removeOwnedTempDir, removeOwnedTempDirSync } from './owned-temp-dir.js';

/**
 * A file a command writes whole under a name the user gave (`volume export`, `backup export
 * --archive`, `cairn init`'s config), out of sight until complete (createPartialFile).
 */
export interface PartialFile {
  /** Where to write it: `<dir of file>/.cairn-partial-XXXXXX/<name of file>`; nothing is there yet. */
  readonly path: string;
  /**
   * Renames the written (and fsynced: the caller's) file over the named file, removes the private
   * directory and fsyncs the named file's directory (syncPublished). A failed rename rejects and
   * leaves everything for discard. Once the rename is done it resolves, the file being in place:
   * a failed fsync of the directory is `notDurable` in the result, for the caller to warn of.
   */
  publish(): Promise<Published>;
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
  const discard = () => removeOwnedTempDir(dir).catch(() => {});
  return {
    path,
    async publish() {
      await rename(path, file);
      await discard();
      return syncPublished(file);
    },
    discard,
    discardSync() {
      try {
        removeOwnedTempDirSync(dir);
      } catch {
        // Left behind, it is removed by a later sweep once its owner is dead.
      }
    },
  };
}

/**
 * What publishing a file under its name came to: it is in place, and `notDurable` is set when the
 * fsync of its directory failed, so that its new directory entry may not survive a crash or power
 * loss (the old file, or none, may be found there after one): a CairnError of the code the system
 * error maps to (toCairnError), with details.file, whose message says so, for the caller to print
 * as a warning (the command succeeded: nothing is to be undone or retried).
 */
export interface Published {
  readonly notDurable?: CairnError;
}

/**
 * fsyncs the directory of `file`, just put in place under its name by a rename or a link, so that
 * the name survives a crash; never rejects: a failure is `notDurable` (Published), the file being
 * there whatever the fsync says.
 */
export async function syncPublished(file: string): Promise<Published> {
  const dir = dirname(file);
  try {
    await syncDir(dir);
    return {};
  } catch (err) {
    const e = toCairnError(err);
    const message = `${file} is written, but its directory ${dir} could not be fsynced (${e.message}): a crash or power loss before the system writes it out may lose the new file`;
    return { notDurable: new CairnError(e.code, message, { cause: err, details: { file } }) };
  }
}

/**
 * Writes `data` as the file `file` whole, replacing what is there (createPartialFile: written in
 * its private directory, fsynced, renamed over `file`, directory fsynced): `file` holds its old
 * content or all of `data`, never a part. On failure the private directory is removed and the
 * system error thrown; one a process killed outright leaves is removed by a later sweep. A failed
 * fsync of the directory after the rename does not reject: it is `notDurable` (Published).
 */
export async function writeFileWhole(file: string, data: Uint8Array | string): Promise<Published> {
  const partial = await createPartialFile(file);
  try {
    await writeNewFileDurably(partial.path, data);
    return await partial.publish();
  } finally {
    await partial.discard();
  }
}
