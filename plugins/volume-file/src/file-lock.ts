import { spawn } from 'node:child_process';
import { open, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError } from '@cairn/core';
import { fsExt, type FsExt } from './native-fs.js';

export type LockMode = 'shared' | 'exclusive';

/** A flock(2) lock held on one open file description. */
export interface HeldLock {
  readonly mode: LockMode;
  /**
   * Present where the lock is on a descriptor of this process (fs-ext): converts a shared lock to
   * exclusive in place, without waiting. Linux does that under one kernel lock when it succeeds,
   * but a failed conversion has already dropped the shared lock; it is then taken back on the same
   * descriptor. Resolves to the mode now held, or null when no lock is held any more (another
   * process got in): the lock is then released and must not be trusted.
   */
  upgrade?(): Promise<LockMode | null>;
  /** Drops the lock. Idempotent. */
  release(): Promise<void>;
}

/**
 * Takes a flock(2) on `path` without waiting; resolves to null when another open file (another
 * process, or another driver instance) holds a conflicting lock. The lock dies with the process.
 * With fs-ext the lock is taken on a descriptor of this process; without it, on a `flock(1)`
 * helper process (util-linux) that holds it until its stdin closes — also when this process dies.
 * `NOT_FOUND` when `path` does not exist.
 */
export async function tryLock(path: string, mode: LockMode, driver: string): Promise<HeldLock | null> {
  const ext = fsExt();
  if (ext) {
    const fh = await open(path, 'r');
    try {
      ext.flockSync(fh.fd, mode === 'exclusive' ? 'exnb' : 'shnb');
    } catch (err) {
      await fh.close();
      const code = (err as { code?: string }).code;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return null;
      throw new CairnError('INTERNAL', `flock ${path}: ${(err as Error).message}`, { driver, cause: err });
    }
    return descriptorLock(fh, mode, ext, path, driver);
  }
  return helperLock(path, mode, driver);
}

function descriptorLock(fh: FileHandle, initial: LockMode, ext: FsExt, path: string, driver: string): HeldLock {
  let mode = initial;
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await fh.close(); // closing the last descriptor drops the flock
  };
  /** flock without waiting; false on conflict. */
  const take = (m: LockMode): boolean => {
    try {
      ext.flockSync(fh.fd, m === 'exclusive' ? 'exnb' : 'shnb');
      return true;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return false;
      throw new CairnError('INTERNAL', `flock ${path}: ${(err as Error).message}`, { driver, cause: err });
    }
  };
  return {
    get mode() {
      return mode;
    },
    upgrade: async () => {
      if (released) return null;
      try {
        if (mode === 'exclusive' || take('exclusive')) return (mode = 'exclusive');
        if (take('shared')) return mode; // another holder conflicts; the shared lock is back
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

const CONFLICT_EXIT = 75;

function helperLock(path: string, mode: LockMode, driver: string): Promise<HeldLock | null> {
  return new Promise((resolve, reject) => {
    const args = ['--nonblock', '--conflict-exit-code', String(CONFLICT_EXIT), mode === 'exclusive' ? '--exclusive' : '--shared', '--no-fork', path];
    const child = spawn('flock', [...args, '-c', 'echo locked; exec cat >/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let settled = false;
    let stderr = '';
    const exited = new Promise<void>((r) => child.once('close', () => r()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      if (settled || !d.toString().includes('locked')) return;
      settled = true;
      // A held lock must not keep the process alive; waiting for its release must.
      const streams = [child.stdin, child.stdout, child.stderr] as unknown as { ref?: () => void; unref?: () => void }[];
      child.unref();
      for (const s of streams) s.unref?.();
      let released = false;
      resolve({
        mode,
        release: async () => {
          if (released) return;
          released = true;
          child.ref();
          for (const s of streams) s.ref?.();
          child.stdin.end();
          await exited;
        },
      });
    });
    child.once('error', (err) => {
      if (settled) return;
      settled = true;
      reject(new CairnError('NOT_SUPPORTED', `locking needs fs-ext or flock(1): ${err.message}`, { driver, cause: err }));
    });
    child.once('close', (code) => {
      if (settled) return;
      settled = true;
      if (code === CONFLICT_EXIT) resolve(null);
      else if (/No such file/.test(stderr)) reject(new CairnError('NOT_FOUND', `${path} not found`, { driver }));
      else reject(new CairnError('INTERNAL', `flock(1) on ${path} exited ${String(code)}: ${stderr.trim()}`, { driver }));
    });
  });
}
