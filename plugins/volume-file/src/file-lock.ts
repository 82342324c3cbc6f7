import { spawn } from 'node:child_process';
import { open, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError } from '@cairn/core';
import { fsExt, type FsExt } from './native-fs.js';

export type LockMode = 'shared' | 'exclusive';

/** A flock(2) lock held on one open file description of this process. */
export interface HeldLock {
  readonly mode: LockMode;
  /**
   * Converts a shared lock to exclusive, without waiting, on a descriptor of the same file opened
   * for writing (which NFS needs: lockFile), or in place when the file cannot be opened so. Either
   * way the shared lock is dropped before the exclusive one is tried (as flock(2) itself does); a
   * refused conversion takes the shared lock back, read-only. Resolves to the mode now held, or null when no lock
   * is held any more (another process got in): the lock is then released and must not be trusted.
   */
  upgrade(): Promise<LockMode | null>;
  /** Drops the lock (closes its descriptor). Idempotent. */
  release(): Promise<void>;
}

/**
 * flock(2) without waiting on the open file `fh`, in `mode`: true when taken (or converted), false
 * when another open file holds a conflicting lock; a CairnError for anything else.
 */
type Flock = (fh: FileHandle, mode: LockMode) => Promise<boolean>;

/**
 * Takes a flock(2) on `path` without waiting; resolves to null when another open file (another
 * process, or another driver instance) holds a conflicting lock. The lock is on a descriptor of
 * this process, so it dies with the process. The file is never created: throws what open(2)
 * throws (ENOENT when `path` does not exist). It is opened read-only for a shared lock, and for an
 * exclusive one for reading and writing, read-only only when open(2) refuses writing (lockFile);
 * upgrade() gets a writable descriptor when it needs one. The flock(2) call itself is made
 * by `fs-ext`, or without it by `flock(1)` (util-linux) run on that same open file (its fd 3),
 * which exits at once, leaving the lock with this process's descriptor.
 */
export async function tryLock(path: string, mode: LockMode, driver: string): Promise<HeldLock | null> {
  const ext = fsExt();
  const flock: Flock = ext ? (fh, m) => Promise.resolve(nativeFlock(ext, fh, m, path, driver)) : (fh, m) => helperFlock(fh, m, path, driver);
  const fh = await lockFile(path, mode);
  let taken = false;
  try {
    taken = await flock(fh, mode);
  } finally {
    if (!taken) await fh.close();
  }
  return taken ? descriptorLock(fh, mode, flock) : null;
}

/** Why open(2) may refuse writing a file it lets this process read: permissions, a read-only mount, an immutable file. */
const WRITE_REFUSED = new Set(['EACCES', 'EROFS', 'EPERM']);

/**
 * `path` opened to be flocked in `mode`, never created; what open(2) throws otherwise (ENOENT, ...)
 * is thrown. Nothing is ever written through it.
 *
 * Exclusive: read-write (O_RDWR), or read-only when open(2) refuses writing (WRITE_REFUSED). Why
 * for writing: man 2 flock, "NFS details": since Linux 2.6.12 NFS clients emulate flock() as
 * fcntl(2) byte-range locks on the entire file, so "in order to place an exclusive lock, the file
 * must be opened for writing" (fcntl(2) fails a write lock on a descriptor not open for writing
 * with EBADF, which would surface as INTERNAL). On a local file system flock(2) ignores the open
 * mode: a read-only descriptor still takes both modes there, which the fallback keeps; on NFS an
 * exclusive lock on it still fails as before.
 *
 * Shared: read-only, always: a read lock (fcntl F_RDLCK on NFS) needs only read access, and a
 * writable descriptor is not free. The image lock of a read-only attach is on the image itself,
 * held for as long as the attachment (a backup reading for hours): a writable descriptor there
 * makes `mount -o remount,ro` fail EBUSY, makes overlayfs copy a lower-layer image up, and makes
 * inotify report IN_CLOSE_WRITE for an image nobody wrote, as would every status probe's shared
 * lock on a `.writer` file. Upgrading such a lock reopens the file for writing (writableAgain).
 */
async function lockFile(path: string, mode: LockMode): Promise<FileHandle> {
  if (mode === 'shared') return open(path, 'r');
  try {
    return await open(path, 'r+');
  } catch (err) {
    if (!WRITE_REFUSED.has((err as { code?: string }).code ?? '')) throw err;
    return open(path, 'r');
  }
}

/**
 * The file open read-only as `fh` opened again for reading and writing, through
 * /proc/self/fd (the same file, even if its path now names another or none), for an exclusive
 * lock on NFS (lockFile); undefined when that is refused or impossible (no /proc, WRITE_REFUSED):
 * the lock is then converted on `fh` itself, as flock(2) allows on a local file system.
 */
async function writableAgain(fh: FileHandle): Promise<FileHandle | undefined> {
  return open(`/proc/self/fd/${fh.fd}`, 'r+').catch(() => undefined);
}

/**
 * A held lock on `first`. A shared lock's descriptor is always read-only (lockFile); converted to
 * exclusive, it moves to a writable descriptor of the same file first (writableAgain): the shared
 * lock is dropped with the old descriptor and the exclusive one tried on the new, which is what a
 * flock(2) conversion does anyway (it drops the shared lock before taking the exclusive one, and
 * keeps it dropped when that fails). When the exclusive lock is refused, the shared lock is taken
 * back on a read-only descriptor again.
 */
function descriptorLock(first: FileHandle, initial: LockMode, flock: Flock): HeldLock {
  let fh = first;
  let mode = initial;
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await fh.close(); // closing the last descriptor of the open file drops the flock
  };
  /** Moves the lock to descriptor `next`, closing the current one (which drops the lock held on it). */
  const moveTo = async (next: FileHandle) => {
    const old = fh;
    fh = next;
    await old.close();
  };
  /** Shared to exclusive on the descriptor in hand; else the shared lock back on it; else false. */
  const convert = async (): Promise<boolean> => {
    if (await flock(fh, 'exclusive')) {
      mode = 'exclusive';
      return true;
    }
    return flock(fh, 'shared');
  };
  /** The conversion moved to a writable descriptor; the shared lock taken back read-only when refused. */
  const convertWritable = async (rw: FileHandle): Promise<boolean> => {
    const ro = await open(`/proc/self/fd/${fh.fd}`, 'r').catch(async (err: unknown) => {
      await rw.close();
      throw err;
    });
    let back = false;
    try {
      await moveTo(rw);
      if (await flock(fh, 'exclusive')) {
        mode = 'exclusive';
        return true;
      }
      back = await flock(ro, 'shared');
    } finally {
      if (!back) await ro.close();
    }
    if (back) await moveTo(ro);
    return back;
  };
  return {
    get mode() {
      return mode;
    },
    upgrade: async () => {
      if (released) return null;
      if (mode === 'exclusive') return mode;
      try {
        const rw = await writableAgain(fh);
        if (await (rw ? convertWritable(rw) : convert())) return mode; // exclusive, or the shared lock back (another holder conflicts)
      } catch (err) {
        await release(); // in an unknown state: held no more
        throw err;
      }
      await release();
      return null;
    },
    release,
  };
}

/** Like tryLock, but retries every 10 ms for up to `timeoutMs`; then `BUSY`. */
export async function lockWithin(path: string, mode: LockMode, timeoutMs: number, driver: string): Promise<HeldLock> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const held = await tryLock(path, mode, driver);
    if (held) return held;
    if (Date.now() >= deadline) throw new CairnError('BUSY', `${path} stays locked by another process`, { driver });
    await sleep(10);
  }
}

function nativeFlock(ext: FsExt, fh: FileHandle, mode: LockMode, path: string, driver: string): boolean {
  try {
    ext.flockSync(fh.fd, mode === 'exclusive' ? 'exnb' : 'shnb');
    return true;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return false;
    throw new CairnError('INTERNAL', `flock ${path}: ${(err as Error).message}`, { driver, cause: err });
  }
}

const CONFLICT_EXIT = 75;

/**
 * The flock(2) of nativeFlock made by `flock(1)`, given `fh` as its fd 3: the lock belongs to the
 * open file, which this process keeps open after flock(1) has exited.
 */
function helperFlock(fh: FileHandle, mode: LockMode, path: string, driver: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const args = ['--nonblock', '--conflict-exit-code', String(CONFLICT_EXIT), mode === 'exclusive' ? '--exclusive' : '--shared', '3'];
    const child = spawn('flock', args, { stdio: ['ignore', 'ignore', 'pipe', fh.fd] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', (err) => reject(new CairnError('NOT_SUPPORTED', `locking needs fs-ext or flock(1): ${err.message}`, { driver, cause: err })));
    child.once('close', (code) => {
      if (code === 0) resolve(true);
      else if (code === CONFLICT_EXIT) resolve(false);
      else reject(new CairnError('INTERNAL', `flock(1) on ${path} exited ${String(code)}: ${stderr.trim()}`, { driver }));
    });
  });
}
