/**
 * The store's space reserve: one file of random bytes in the store's directory, given up so that
 * writes of operations that free space (ObjectStore PutOptions.spendReserve) fit on a full file
 * system, and made again once deletes freed space.
 *
 * Contract:
 * - The file is `RESERVE_NAME` in the store's directory. `@` is no key character, so it is never
 *   an object (list, GC and verify never see it), and it is no temporary file (sweepTemp leaves it).
 * - Its bytes are random, written and fsynced before it is published: blocks are really allocated
 *   even on compressing or deduplicating file systems (zeros would take none there).
 * - At most one reserve file, whatever processes and hosts share the directory: it is written as a
 *   temporary file (newTempName, so a creator that dies leaves only what sweepTemp removes) and
 *   published by link(2), which never replaces an existing reserve; the loser removes its file.
 * - Releasing is one unlink(2) of that name: two releasers at once remove it once, and neither
 *   fails.
 * - It is made only when the file system has room for it twice over (it never takes more than half
 *   of what is free), and never fails the call that asked for it.
 */
import { randomBytes } from 'node:crypto';
import { lstat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { createTempFile, fsyncDir, linkIfAbsent, writeAll } from './durable-fs.js';
import { keepFresh } from './temp-refresh.js';

/** The reserve's file name in the store's directory. */
export const RESERVE_NAME = '@reserve';

/**
 * Default reserve size: 64 MiB. What a delete and a GC must write before they delete: lock objects
 * and a `deleting` record (a few KiB each, with their temporary files and directory blocks), and
 * GC's rewrite of the index objects that name removed packs (an index object of the default sizes,
 * 64 packs of 16 MiB in 128 KiB chunks, is about 1 MiB): room for a GC touching some 60 index
 * objects, the packs of a deleted backup that wrote up to about 60 GiB of new data.
 */
export const DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024;

/** The reserve is written in pieces of this size, each its own random bytes. */
const PIECE = 1024 * 1024;

export class SpaceReserve {
  /** The reserve file. */
  readonly path: string;
  /** A creation running in this process (one at a time). */
  private creating: Promise<boolean> | undefined;
  /**
   * Set once this store was asked for a reserve (ensure) or gave one up: only then do its deletes
   * make it again. A store used without a repository never writes one on its own.
   */
  private armed = false;

  constructor(
    private readonly directory: string,
    /** Bytes of the reserve; 0 disables it. */
    readonly bytes: number,
  ) {
    this.path = join(directory, RESERVE_NAME);
  }

  get enabled(): boolean {
    return this.bytes > 0;
  }

  /** Makes the reserve when it is missing and fits. True when it is there afterwards. Never rejects. */
  async ensure(): Promise<boolean> {
    if (!this.enabled) return false;
    this.armed = true;
    if (await this.present()) return true;
    this.creating ??= this.create().finally(() => (this.creating = undefined));
    return this.creating;
  }

  /**
   * Gives the reserve up (unlinks it) for a marked write that found no room. True when this call
   * removed it; false when it was not there (another process took it, or none was made).
   */
  async release(): Promise<boolean> {
    if (!this.enabled) return false;
    this.armed = true;
    try {
      await unlink(this.path);
      return true;
    } catch {
      return false; // gone already (another releaser), or not removable: the retry finds out
    }
  }

  /** After a delete freed space: makes the reserve again when it is missing and fits. Never rejects. */
  async afterFree(): Promise<void> {
    if (!this.armed || this.creating) return;
    await this.ensure();
  }

  /** Whether a regular file is at the reserve's name (anything else there is left alone: false). */
  private async present(): Promise<boolean> {
    try {
      return (await lstat(this.path)).isFile();
    } catch {
      return false;
    }
  }

  /** Whether the file system has room for the reserve twice over. */
  private async fits(): Promise<boolean> {
    const s = await statfs(this.directory);
    return s.bavail * s.bsize >= 2 * this.bytes;
  }

  /** Writes, fsyncs and publishes the reserve (see the file's contract); false when it did not. */
  private async create(): Promise<boolean> {
    let temp: string | undefined;
    let fh: FileHandle | undefined;
    const stopRefresh = keepFresh(() => fh);
    try {
      if (!(await this.fits())) return false;
      ({ path: temp, fh } = await createTempFile(this.directory, false));
      for (let done = 0; done < this.bytes; done += PIECE) await writeAll(fh, randomBytes(Math.min(PIECE, this.bytes - done)), done);
      await fh.sync();
      const closing = fh;
      fh = undefined;
      await closing.close();
      await linkIfAbsent(temp, this.path); // false: another creator's reserve is there, which is as good
      await fsyncDir(this.directory);
      return await this.present();
    } catch {
      return false; // no room after all, a read-only file system, the directory gone: no reserve
    } finally {
      stopRefresh();
      await fh?.close().catch(() => undefined);
      if (temp) await unlink(temp).catch(() => undefined); // published or not, the temporary name goes
    }
  }
}
