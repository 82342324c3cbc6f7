import { createRequire } from 'node:module';

/**
 * The optional native package `fs-ext`: lseek(SEEK_DATA/SEEK_HOLE) and flock(2), which Node's own
 * `fs` does not offer. Loaded once, lazily; `undefined` when it is not installed, and callers then
 * use their documented fallbacks (scan for non-zero blocks; flock(1) helper processes).
 */
export interface FsExt {
  seekSync(fd: number, offset: number, whence: number): number;
  flockSync(fd: number, flags: 'ex' | 'sh' | 'un' | 'exnb' | 'shnb'): void;
}

const SEEK_DATA = 3;
const SEEK_HOLE = 4;

let loaded: FsExt | null | undefined;

/** `fs-ext` when it can be loaded, else undefined. Set CAIRN_VOLUME_FILE_NO_FS_EXT=1 to force the fallbacks. */
export function fsExt(): FsExt | undefined {
  if (loaded === undefined) {
    loaded = null;
    if (process.env.CAIRN_VOLUME_FILE_NO_FS_EXT !== '1') {
      try {
        loaded = createRequire(import.meta.url)('fs-ext') as FsExt;
      } catch {
        loaded = null;
      }
    }
  }
  return loaded ?? undefined;
}

/**
 * Next offset ≥ `offset` holding data, or `end` when none (ENXIO). Throws other system errors.
 * Requires fs-ext.
 */
export function seekData(ext: FsExt, fd: number, offset: number, end: number): number {
  try {
    return Math.min(ext.seekSync(fd, offset, SEEK_DATA), end);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENXIO') return end;
    throw err;
  }
}

/** Next hole ≥ `offset` (the end of the file counts as a hole), clipped to `end`. Requires fs-ext. */
export function seekHole(ext: FsExt, fd: number, offset: number, end: number): number {
  try {
    return Math.min(ext.seekSync(fd, offset, SEEK_HOLE), end);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENXIO') return end;
    throw err;
  }
}
