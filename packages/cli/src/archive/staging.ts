import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDirectories, toCairnError, type Attachment } from '@cairn/core';
import { FileVolumeDriver } from '@cairn/volume-file';
import { createOwnedTempDir, OWNER_FILE, removeDeadTempDirs, removeOwnedTempDir } from '../io/owned-temp-dir.js';

/** The owner file in each staging directory (owned-temp-dir.ts). */
export const STAGING_OWNER_FILE = OWNER_FILE;

/**
 * A private sparse volume in a temporary directory `cairn-archive-XXXXXX` (a `file` driver of its
 * own), where an archive's data is assembled before export or checked before import. Nothing
 * outside the temporary directory is touched; `dispose()` removes it (idempotent).
 *
 * A process killed before `dispose()` (SIGKILL, OOM, a crash) leaves its directory behind, so the
 * directory names its owner (owned-temp-dir.ts: written before any data) and every `create` first
 * removes the staging directories of owners that are certainly dead (`removeDeadStagings`).
 */
export class StagingVolume {
  private constructor(
    readonly driver: FileVolumeDriver,
    readonly volumeId: string,
    private readonly dir: string,
  ) {}

  /**
   * `size` must be a positive multiple of 512 (`INVALID_INPUT` otherwise). `parent` is the
   * directory the staging goes in (default: the system temporary directory, `os.tmpdir()`).
   * Rejects only with a CairnError: a system error is mapped by toCairnError with a message naming
   * the staging directory (`parent` missing `NOT_FOUND`, full `UNAVAILABLE`, a file
   * `INVALID_INPUT`), so that a caller never takes it for an error of the archive it reads or writes.
   * `options.makeParent`: make `parent` and its missing parents first (makeDirectories).
   */
  static async create(size: number, parent: string = tmpdir(), options: { makeParent?: boolean } = {}): Promise<StagingVolume> {
    const dir = await (options.makeParent ? makeDirectories(parent) : Promise.resolve()).then(() => createOwnedTempDir('cairn-archive-', parent)).catch((err: unknown) => {
      throw toCairnError(err, 'archive', `cannot create a staging directory in ${parent}`);
    });
    try {
      const driver = new FileVolumeDriver({ directory: dir });
      const v = await driver.createVolume({ size, name: 'staging' });
      return new StagingVolume(driver, v.id, dir);
    } catch (err) {
      await removeOwnedTempDir(dir).catch(() => {});
      throw toCairnError(err, 'archive', `cannot create the staging volume in ${dir}`);
    }
  }

  attach(mode: 'ro' | 'rw'): Promise<Attachment> {
    return this.driver.attach({ kind: 'volume', id: this.volumeId }, mode);
  }

  async dispose(): Promise<void> {
    await removeOwnedTempDir(this.dir); // its owner file last
  }
}

/** Removes from `parent` the staging directories whose owner is certainly dead (removeDeadTempDirs of `cairn-archive-`), and returns their paths. Never throws. */
export function removeDeadStagings(parent: string = tmpdir()): Promise<string[]> {
  return removeDeadTempDirs('cairn-archive-', parent);
}

/**
 * The directory `backup export --archive` and `backup import` stage a backup's data in unless
 * told another (`--staging-dir`): `<stateDir>/staging`, which StagingVolume.create makes when it
 * is missing (`makeParent`). The state directory is on disk in every deployment, unlike the
 * system temporary directory, often a tmpfs that would hold a large backup's data in memory.
 */
export const defaultArchiveStaging = (stateDir: string): string => join(stateDir, 'staging');
