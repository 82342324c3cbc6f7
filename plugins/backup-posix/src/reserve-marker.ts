/**
 * The marker that lets one creator at a time write the space reserve (space-reserve.ts), so that
 * several processes, store instances or hosts opening one repository at once do not each write a
 * reserve's worth of temporary bytes before one of them wins the link: on a nearly full disk those
 * temporaries alone would fill it.
 *
 * Contract:
 * - The marker is the file `MAKING_NAME` in the store's directory (`@` is no key character and
 *   `~tmp-` does not begin it: it is never an object and sweepTemp leaves it). A creator takes it
 *   by creating it exclusively (O_CREAT|O_EXCL: one winner across processes and NFS clients)
 *   before it writes its temporary reserve file, and removes it once the reserve is published or
 *   its creation failed. So at most one temporary reserve is written at a time, except in the rare
 *   race described below for a dead creator's marker.
 * - Its holder keeps its mtime fresh while it holds it (every TEMP_REFRESH_MS, as writers do their
 *   temporary files: temp-refresh.ts). A marker whose mtime is older than MAKING_STALE_MS was left
 *   by a creator that died; the next creator takes it over: renames it to a temporary name (one
 *   taker gets it; if that taker dies too, sweepTemp removes the file), removes it when it is
 *   stale, and creates its own. What a taker got that is fresh after all (a live creator made it
 *   between the look and the rename) is linked back where nothing else is; when another creator's
 *   marker is there already, two creators may write at once that one time.
 * - A holder removes the marker only while it is still its own (same inode).
 * - Others that find a live marker write nothing, and do not wait for the holder (space-reserve.ts).
 */
import { lstat, rename, unlink, type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { errnoOf } from './fs-errors.js';
import { openOwnerOnly } from '@cairn/core';
import { FILE_MODE, linkIfAbsent } from './durable-fs.js';
import { newTempName } from './key-layout.js';
import { keepFresh } from './temp-refresh.js';

/** The marker's file name in the store's directory. */
export const MAKING_NAME = '@reserve.making';

/**
 * Age after which a marker is taken for a dead creator's: the least age at which the repository's
 * GC sweeps temporary files (15 minutes), well above the holder's refresh interval plus the clock
 * skew between hosts sharing the directory.
 */
export const MAKING_STALE_MS = 15 * 60 * 1000;

const isStale = (st: Stats): boolean => st.mtimeMs < Date.now() - MAKING_STALE_MS;

export class ReserveMarker {
  readonly path: string;

  constructor(private readonly directory: string) {
    this.path = join(directory, MAKING_NAME);
  }

  /**
   * Takes the marker. Resolves a function that gives it back (never rejects), or undefined when a
   * live creator holds it. Filesystem errors of the exclusive create (ENOSPC, EROFS, ...) reject.
   */
  async take(): Promise<(() => Promise<void>) | undefined> {
    for (let attempt = 0; attempt < 3; attempt++) {
      let fh: FileHandle;
      try {
        fh = await openOwnerOnly(this.path, FILE_MODE);
      } catch (err) {
        if (errnoOf(err) !== 'EEXIST') throw err;
        if (await this.removeStale()) continue;
        return undefined;
      }
      return this.held(fh);
    }
    return undefined; // taken again and again meanwhile: a live creator has it
  }

  /** Whether a live creator holds the marker (it is there and fresh). Never rejects. */
  async live(): Promise<boolean> {
    const st = await lstat(this.path).catch(() => undefined);
    return st !== undefined && !isStale(st);
  }

  /** The give-back of a marker just created as `fh`: kept fresh until then, removed only while it is ours. */
  private async held(fh: FileHandle): Promise<() => Promise<void>> {
    const stopRefresh = keepFresh(() => fh);
    const ino = await fh.stat().then((st) => st.ino, () => undefined);
    return async () => {
      stopRefresh();
      await fh.close().catch(() => undefined);
      const now = await lstat(this.path).catch(() => undefined);
      if (now && ino !== undefined && now.ino === ino) await unlink(this.path).catch(() => undefined);
    };
  }

  /**
   * Removes a dead creator's marker (see the contract). True when the marker is gone now (removed,
   * or removed by another), so that taking it may be tried again; false when a live one is there.
   */
  private async removeStale(): Promise<boolean> {
    const seen = await lstat(this.path).catch(() => undefined);
    if (!seen) return true;
    if (!isStale(seen)) return false;
    const taken = join(this.directory, newTempName());
    try {
      await rename(this.path, taken);
    } catch {
      return true; // another taker got it first (or it went): try to take it again
    }
    const got = await lstat(taken).catch(() => undefined);
    const stale = got === undefined || isStale(got);
    if (!stale) await linkIfAbsent(taken, this.path).catch(() => false); // a live creator's after all: put it back
    await unlink(taken).catch(() => undefined);
    return stale;
  }
}
