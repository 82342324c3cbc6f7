import { CairnError, KeyedMutex } from '@cairn/core';
import { tryLock, type HeldLock, type LockMode } from './file-lock.js';

interface Entry {
  lock: HeldLock;
  refs: number;
}

const LOST: HeldLock = { mode: 'shared', release: async () => {} };

/**
 * The flock(2) locks one driver instance holds on images, reference-counted: one open file per
 * image, shared while only readers hold it, exclusive once a writer does (until every holder is
 * gone). Another process — or another driver instance — holding a conflicting lock makes `hold`
 * fail with `BUSY`.
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
        const lock = await tryLock(path, mode, this.driver);
        if (!lock) throw this.busy(path, mode);
        this.entries.set(path, { lock, refs: 1 });
        return;
      }
      if (mode === 'exclusive' && e.lock.mode !== 'exclusive') {
        // flock conversion is not atomic on Linux either: drop, try exclusive, else take shared back.
        await e.lock.release();
        const ex = await tryLock(path, 'exclusive', this.driver);
        if (!ex) {
          e.lock = (await tryLock(path, 'shared', this.driver)) ?? LOST;
          throw this.busy(path, mode);
        }
        e.lock = ex;
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
        await e.lock.release();
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

  private busy(path: string, mode: LockMode): CairnError {
    return new CairnError('BUSY', `${path} is locked by another process (wanted ${mode})`, { driver: this.driver });
  }
}
