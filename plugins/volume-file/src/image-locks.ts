import { CairnError, KeyedMutex } from '@cairn/core';
import { tryLock, type HeldLock, type LockMode } from './file-lock.js';

interface Entry {
  /** Null once lost: holders remain but no lock is held, and the next `hold` must take one for real. */
  lock: HeldLock | null;
  refs: number;
}

/**
 * The flock(2) locks one driver instance holds on images, reference-counted: one open file per
 * image, shared while only readers hold it, exclusive once a writer does (until every holder is
 * gone). Another process — or another driver instance — holding a conflicting lock makes `hold`
 * fail with `BUSY`.
 *
 * Upgrading shared → exclusive can lose the lock altogether (flock drops the shared lock before it
 * takes the exclusive one; another process may get in between). A lost lock never counts as held:
 * the next `hold` re-acquires it, or fails with `BUSY`. Earlier holders keep their references
 * (their release stays valid) but are no longer protected; that is the one thing a lost race costs.
 */
export class ImageLocks {
  private readonly entries = new Map<string, Entry>();
  private readonly mutex = new KeyedMutex();

  constructor(private readonly driver: string) {}

  /** Holds `mode` on `path`; resolves to the release function (idempotent). `BUSY` on conflict. */
  async hold(path: string, mode: LockMode): Promise<() => Promise<void>> {
    await this.mutex.run(path, async () => {
      const e = this.entries.get(path);
      if (!e) {
        this.entries.set(path, { lock: await this.take(path, mode), refs: 1 });
        return;
      }
      if (!e.lock) e.lock = await this.take(path, mode);
      else if (mode === 'exclusive' && e.lock.mode !== 'exclusive') {
        const shared = e.lock;
        e.lock = null; // lost until the upgrade says otherwise, also if it throws
        e.lock = await this.upgrade(shared);
        if (e.lock?.mode !== 'exclusive') throw this.busy(path, mode);
      }
      e.refs++;
    });
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      await this.mutex.run(path, async () => {
        const e = this.entries.get(path);
        if (!e || --e.refs > 0) return;
        this.entries.delete(path);
        await e.lock?.release();
      });
    };
  }

  /** Holds `mode` for the duration of `fn`. */
  async during<T>(path: string, mode: LockMode, fn: () => Promise<T>): Promise<T> {
    const release = await this.hold(path, mode);
    try {
      return await fn();
    } finally {
      await release();
    }
  }

  private async take(path: string, mode: LockMode): Promise<HeldLock> {
    const lock = await tryLock(path, mode, this.driver);
    if (!lock) throw this.busy(path, mode);
    return lock;
  }

  /** A shared lock made exclusive in place; else the shared lock still (or again) held; else null: lost. */
  private async upgrade(lock: HeldLock): Promise<HeldLock | null> {
    return (await lock.upgrade()) ? lock : null;
  }

  private busy(path: string, mode: LockMode): CairnError {
    return new CairnError('BUSY', `${path} is locked by another process (wanted ${mode})`, { driver: this.driver });
  }
}
