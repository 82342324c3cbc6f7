import { chmod, open, stat, unlink, utimes } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageStamp } from './image-stamp.js';

/**
 * How image stamps are read: a file's stamp fields, and the timestamp clock of the file system
 * holding it. The driver uses fileSystemClock; the seam lets tests emulate a file system whose
 * timestamps are coarser than this machine's (DriverContext.clock).
 */
export interface StampClock {
  /** Inode, size, nanosecond mtime and ctime of the file at `path`. Throws what stat(2) throws (ENOENT). */
  stat(path: string): Promise<ImageStamp>;
  /**
   * A reading of the timestamp clock of the file system holding directory `dir`: every change
   * made to a file there after this resolves gets a ctime at least this (as long as the system
   * clock is not set back).
   */
  now(dir: string): Promise<bigint>;
  /** Lets time pass before reading the clock again; `attempt` counts the readings so far, from 0. */
  pause(attempt: number): Promise<void>;
  /**
   * Gives the file at `path` a ctime read from the clock now, changing nothing else (its data,
   * size, mtime and mode stay). Throws what chmod(2) throws (EPERM: another user's file; EROFS).
   */
  touch(path: string): Promise<void>;
}

/** The probe file `now` changes to read the clock: in the directory it is asked about, so on the same file system. */
export const CLOCK_PROBE = '.clock';

/** The real file system. */
export const fileSystemClock: StampClock = {
  async stat(path) {
    const st = await stat(path, { bigint: true });
    return { ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
  },
  async now(dir) {
    // utimes sets the probe's ctime to the file system's current time (its mtime is irrelevant).
    const probe = join(dir, CLOCK_PROBE);
    try {
      await utimes(probe, 0, 0);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'EPERM' || code === 'EACCES') return freshFileCtime(dir); // another user's probe: only its owner may set its times
      if (code !== 'ENOENT') throw err;
      await (await open(probe, 'a', 0o600)).close(); // created now: its ctime is now
    }
    return (await stat(probe, { bigint: true })).ctimeNs;
  },
  async pause(attempt) {
    // The first retry is immediate: with multigrain timestamps (Linux ≥ 6.13 on ext4, xfs, btrfs,
    // tmpfs) a second reading is already finer than any earlier one. Coarse clocks tick every 1–10 ms
    // (1 s or 2 s on file systems storing whole seconds): back off up to 64 ms.
    if (attempt > 0) await sleep(Math.min(2 ** (attempt - 1), 64));
  },
  async touch(path) {
    // A chmod to the mode it has: the kernel sets ctime to now on any attribute change, and only then.
    await chmod(path, (await stat(path)).mode & 0o7777);
  },
};

/** The ctime of a file created in `dir` now (and removed at once): the clock reading when the probe is not ours to change. */
async function freshFileCtime(dir: string): Promise<bigint> {
  const path = join(dir, `${CLOCK_PROBE}-${randomBytes(8).toString('hex')}`);
  const fh = await open(path, 'wx', 0o600);
  try {
    return (await fh.stat({ bigint: true })).ctimeNs;
  } finally {
    await fh.close().catch(() => {});
    await unlink(path).catch(() => {});
  }
}
