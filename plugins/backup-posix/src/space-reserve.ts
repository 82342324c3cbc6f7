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
 * - One creator writes at a time (reserve-marker.ts): a creation takes the marker `@reserve.making`
 *   after its free-space check and before it writes, and gives it back once its temporary file is
 *   gone (published or not). A creation that finds the marker held by a live creator writes
 *   nothing and does not wait: it resolves whether a reserve is there now (a repository's open
 *   awaits ensureReserve, and a creator that died holding the marker keeps it live for
 *   MAKING_STALE_MS, so waiting would stall every open meanwhile). Such a marker hides no
 *   shortage: beingMade also needs the reserve's size free. So creators opening one
 *   repository at once write one reserve's worth of temporary bytes, not one each, and a failed
 *   write (ENOSPC) leaves no temporary file and no marker.
 * - Releasing is one unlink(2) of that name: two releasers at once remove it once, and neither
 *   fails.
 * - It is made only when the file system has room for it twice over (it never takes more than half
 *   of what is free), and never fails the call that asked for it.
 * - A creation whose writes the file system refused for space (ENOSPC, EDQUOT: a user's quota,
 *   which statfs does not show, may refuse what statfs says fits) is not tried again, by ensure or
 *   afterFree, until this process's store has deleted at least the reserve's size since (afterFree
 *   counts the bytes freed): a GC deleting thousands of objects must not write and throw away a
 *   reserve's worth of bytes on each delete. A check that finds too little free space (statfs)
 *   writes nothing and holds no retry back.
 */
import { randomBytes } from 'node:crypto';
import { lstat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { noSpaceErrno } from '@cairn/core';
import { createTempFile, fsyncDir, linkIfAbsent, writeAll } from './durable-fs.js';
import { ReserveMarker } from './reserve-marker.js';
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
  /**
   * Bytes the store must still delete before a creation is tried again: the reserve's size after a
   * creation that failed for space, counted down by afterFree; 0 when nothing holds a retry back.
   */
  private owed = 0;
  /** Test seam: called before each creation writes (after its free-space check passed and it took the marker). */
  beforeWrite: (() => Promise<void> | void) | undefined;
  /** The marker that lets one creator write at a time (reserve-marker.ts). */
  private readonly marker: ReserveMarker;

  constructor(
    private readonly directory: string,
    /** Bytes of the reserve; 0 disables it. */
    readonly bytes: number,
    /** Run before a creation writes anything in `directory` (its marker first); a rejection: no reserve. */
    private readonly beforeCreate: () => Promise<void> = async () => {},
  ) {
    this.path = join(directory, RESERVE_NAME);
    this.marker = new ReserveMarker(directory);
  }

  get enabled(): boolean {
    return this.bytes > 0;
  }

  /** Makes the reserve when it is missing and fits. True when it is there afterwards. Never rejects. */
  async ensure(): Promise<boolean> {
    if (!this.enabled) return false;
    this.armed = true;
    if (await this.present()) return true;
    if (this.owed > 0) return false; // refused for space, and not enough deleted since (see the file's contract)
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

  /**
   * Whether a creation is held back until more is deleted (the file's contract): the store then
   * passes afterFree the sizes of what it deletes, and need not measure them otherwise.
   */
  get owes(): boolean {
    return this.owed > 0;
  }

  /**
   * After a delete (or sweep) freed `freedBytes` (what the removed files held; the store measures
   * it only while `owes`): makes the reserve again when it is missing and fits, unless a creation
   * that failed for space is still held back (the file's contract). Never rejects.
   */
  async afterFree(freedBytes = 0): Promise<void> {
    if (this.owed > 0) this.owed = Math.max(0, this.owed - freedBytes);
    if (!this.armed || this.creating || this.owed > 0) return;
    await this.ensure();
  }

  /**
   * Whether the file system is large enough ever to hold the reserve twice over (its size by
   * statfs, used or not). Where it is not, the reserve is never made and its absence says nothing
   * about free space. False when disabled or statfs fails. Never rejects.
   */
  async possible(): Promise<boolean> {
    if (!this.enabled) return false;
    try {
      const s = await statfs(this.directory);
      return s.blocks * s.bsize >= 2 * this.bytes;
    } catch {
      return false;
    }
  }

  /**
   * Whether the reserve is being made now: a live creator (this process or another) holds the
   * marker, and the file system still has the reserve's size free. A live creator found twice that
   * free (fits) and writes the reserve's size at most, so this holds for as long as it writes; a
   * marker that looks live with less free is a creator's that died within MAKING_STALE_MS (or
   * others filled the disk meanwhile), and it hides no shortage. False when statfs fails. Never
   * rejects.
   */
  async beingMade(): Promise<boolean> {
    if (!this.enabled || !(await this.marker.live())) return false;
    try {
      const s = await statfs(this.directory);
      return s.bavail * s.bsize >= this.bytes;
    } catch {
      return false;
    }
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
    let giveBack: (() => Promise<void>) | undefined;
    const stopRefresh = keepFresh(() => fh);
    try {
      if (!(await this.fits())) return false;
      await this.beforeCreate(); // the store's directory still the one opened (a mount point)
      giveBack = await this.marker.take();
      if (!giveBack) return await this.present(); // another creator is making it: see the contract
      if (await this.present()) return true; // made by the creator that held the marker before
      await this.beforeWrite?.();
      ({ path: temp, fh } = await createTempFile(this.directory, false));
      for (let done = 0; done < this.bytes; done += PIECE) await writeAll(fh, randomBytes(Math.min(PIECE, this.bytes - done)), done);
      await fh.sync();
      const closing = fh;
      fh = undefined;
      await closing.close();
      await linkIfAbsent(temp, this.path); // false: another creator's reserve is there, which is as good
      await fsyncDir(this.directory);
      return await this.present();
    } catch (err) {
      // No room after all (held back until the store deleted the reserve's size), a read-only
      // file system, the directory gone: no reserve.
      if (noSpaceErrno(err)) this.owed = this.bytes;
      return false;
    } finally {
      stopRefresh();
      await fh?.close().catch(() => undefined);
      if (temp) await unlink(temp).catch(() => undefined); // published or not, the temporary name goes
      await giveBack?.(); // only once the temporary file is gone: one at a time
    }
  }
}
