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
   * Converts a shared lock to exclusive in place, without waiting. Linux does that under one
   * kernel lock when it succeeds, but a failed conversion has already dropped the shared lock; it
   * is then taken back on the same descriptor. Resolves to the mode now held, or null when no lock
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
 * throws (ENOENT when `path` does not exist). It is opened for reading and writing, whatever the
 * mode, and read-only only when open(2) refuses writing (lockFile). The flock(2) call itself is made
 * by `fs-ext`, or without it by `flock(1)` (util-linux) run on that same open file (its fd 3),
 * which exits at once, leaving the lock with this process's descriptor.
 */
export async function tryLock(path: string, mode: LockMode, driver: string): Promise<HeldLock | null> {
  const ext = fsExt();
  const flock: Flock = ext ? (fh, m) => Promise.resolve(nativeFlock(ext, fh, m, path, driver)) : (fh, m) => helperFlock(fh, m, path, driver);
  const fh = await lockFile(path);
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
 * `path` opened to be flocked: read-write (O_RDWR, never O_CREAT), or read-only when open(2)
 * refuses writing (WRITE_REFUSED); any other failure (ENOENT, ...) is thrown. Nothing is ever
 * written through it. Why for writing: man 2 flock, "NFS details": since Linux 2.6.12 NFS clients
 * emulate flock() as fcntl(2) byte-range locks on the entire file, so "in order to place an
 * exclusive lock, the file must be opened for writing" (fcntl(2) fails a write lock on a descriptor
 * not open for writing with EBADF, which would surface as INTERNAL). A shared lock is opened the
 * same way so that upgrade() can convert it in place. On a local file system flock(2) ignores the
 * open mode: a read-only descriptor still takes both modes there, which the fallback keeps; on NFS
 * an exclusive lock on it still fails as before.
 */
async function lockFile(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r+');
  } catch (err) {
    if (!WRITE_REFUSED.has((err as { code?: string }).code ?? '')) throw err;
    return open(path, 'r');
  }
}

function descriptorLock(fh: FileHandle, initial: LockMode, flock: Flock): HeldLock {
  let mode = initial;
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await fh.close(); // closing the last descriptor of the open file drops the flock
  };
  return {
    get mode() {
      return mode;
    },
    upgrade: async () => {
      if (released) return null;
      try {
        if (mode === 'exclusive' || (await flock(fh, 'exclusive'))) return (mode = 'exclusive');
        if (await flock(fh, 'shared')) return mode; // another holder conflicts; the shared lock is back
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
