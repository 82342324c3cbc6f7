import { setTimeout as delay } from 'node:timers/promises';
import type { ObjectStore } from '../contracts/object-store.js';
import { CairnError, isCairnError, throwIfAborted } from '../errors.js';
import { newId } from '../util/clock.js';
import { withRetries } from '../util/retry.js';
import { Keys } from './format.js';
import { currentOwner, ownerMayBeAlive, type ProcessOwner } from '../util/process-owner.js';

export type LockKind = 'shared' | 'exclusive' | 'volume' | 'record';

/** A lock object (`locks/<id>`), plain JSON. */
export interface LockDoc {
  id: string;
  kind: LockKind;
  /** For `volume` locks: the volume they serialize. */
  volumeId?: string;
  /** For `record` locks: the backup whose catalog record they guard (RepositoryCatalog.section). */
  backupId?: string;
  owner: ProcessOwner;
  purpose: string;
  createdAt: string;
  expiresAt: string;
}

export interface LockInfo extends LockDoc {
  /** Expired, or held by a process of this host that no longer runs. Stale locks block nothing. */
  stale: boolean;
}

export interface LockHandle {
  doc: LockDoc;
  /**
   * Throws `BUSY` when the lock may have lapsed since it was taken: a refresh that failed until
   * the lock's expiry passed (a store outage) left a window in which GC could see it stale and
   * run. A job checks before it commits (a backup, before its manifest): whatever it reused may
   * be gone.
   */
  assertHeld(): void;
  /**
   * Stops refreshing the lock and deletes it, trying the delete up to three times (a lock left
   * behind blocks its conflicts until it expires). Rejects with the store's error when every try
   * failed; the lock is then left to expire. Idempotent; after a release that failed, a call tries
   * the delete again.
   */
  release(): Promise<void>;
}

export interface LockOptions {
  purpose: string;
  volumeId?: string;
  /** For `record` locks: the backup whose record they guard. */
  backupId?: string;
  /** Wait for conflicting locks to go (default false: fail with BUSY at once). */
  wait?: boolean;
  /** This lock's lifetime without a refresh, in ms (refreshed every third of it). Default: the instance's. */
  ttlMs?: number;
  signal?: AbortSignal;
  /**
   * The lock belongs to an operation that frees space (a delete, a GC): its object and every
   * refresh of it are written with the store's `spendReserve` (ObjectStore PutOptions), so that
   * it can be taken on a full disk where the store keeps a space reserve.
   */
  spendReserve?: boolean;
}

/**
 * How a record lock's id begins: `record-<backup id as hex>-`, then a UUID. Record locks conflict
 * only with record locks of the same backup, so a record lock's check reads only ids with its
 * prefix, and other kinds' checks skip ids beginning `record-`: sections cost the same however
 * many jobs hold locks, and cost those jobs' lock checks nothing.
 */
const RECORD_LOCK_PREFIX = 'record-';
const recordLockPrefix = (backupId: string): string => `${RECORD_LOCK_PREFIX}${Buffer.from(backupId, 'utf8').toString('hex')}-`;

/** True when a lock no longer protects anything: expired, or its owner on this host is gone. */
export function isStale(doc: LockDoc, now = Date.now()): boolean {
  if (Date.parse(doc.expiresAt) < now) return true;
  return !ownerMayBeAlive(doc.owner);
}

/** The put options that mark a write as one that may spend the store's space reserve (none when not). */
export function spending(spendReserve: boolean | undefined): { spendReserve?: true } {
  return spendReserve ? { spendReserve: true } : {};
}

/** Whether `mine` must give way to the live lock `other`. */
function conflicts(mine: LockDoc, other: LockDoc): boolean {
  // A record lock guards one catalog record's read-check-write, which nothing else touches.
  if (mine.kind === 'record' || other.kind === 'record') return mine.kind === other.kind && mine.backupId === other.backupId;
  if (mine.kind === 'exclusive') return true;
  if (mine.kind === 'shared') return other.kind === 'exclusive';
  // volume: any other live lock on the same volume. A granted lock never re-checks, so the
  // newcomer always yields; two newcomers both yield and retry after a random delay.
  return other.kind === 'volume' && other.volumeId === mine.volumeId;
}

/**
 * Locks as objects in the store, with owner and expiry, refreshed while held. Backups hold
 * `shared` (and `volume` for their volume); GC holds `exclusive`; a catalog record's
 * read-check-write holds `record` for that backup (conflicting only with another `record` lock
 * of the same backup). Stale locks are ignored by
 * conflict checks, listed by `list`, and removed only by an explicit `breakLocks`.
 */
export class RepositoryLocks {
  constructor(
    private readonly store: ObjectStore,
    /** Lock lifetime in ms without a refresh. Default 5 minutes; refreshed every third of it. */
    private readonly ttlMs = 5 * 60_000,
    /** Poll interval while waiting, in ms. Default 250. */
    private readonly pollMs = 250,
  ) {}

  async acquire(kind: LockKind, options: LockOptions): Promise<LockHandle> {
    for (;;) {
      throwIfAborted(options.signal);
      const now = Date.now();
      const ttlMs = options.ttlMs ?? this.ttlMs;
      const doc: LockDoc = {
        id: kind === 'record' ? `${recordLockPrefix(options.backupId ?? '')}${newId()}` : newId(),
        kind,
        volumeId: options.volumeId,
        ...(options.backupId !== undefined ? { backupId: options.backupId } : {}),
        owner: currentOwner(),
        purpose: options.purpose,
        createdAt: new Date(now).toISOString(),
        expiresAt: new Date(now + ttlMs).toISOString(),
      };
      await this.store.put(Keys.lock(doc.id), Buffer.from(JSON.stringify(doc)), { ifAbsent: true, signal: options.signal, ...spending(options.spendReserve) }).catch((err: unknown) => {
        // A put cancelled as it published may have landed (ObjectStore CallOptions): removed, with
        // no signal and not awaited (the store may hang), else it blocks others until it expires.
        if (isCairnError(err) && err.code === 'CANCELLED') void this.store.delete(Keys.lock(doc.id)).catch(() => {});
        throw err;
      });
      let blocker: LockInfo | undefined;
      try {
        // Only the locks that can conflict are read: a record lock's check reads its backup's
        // record locks, every other kind's all but record locks (see recordLockPrefix).
        const prefix = kind === 'record' ? recordLockPrefix(options.backupId ?? '') : undefined;
        const relevant = (id: string): boolean => (prefix ? id.startsWith(prefix) : !id.startsWith(RECORD_LOCK_PREFIX));
        blocker = (await this.read(relevant, prefix, options.signal)).find((l) => l.id !== doc.id && !l.stale && conflicts(doc, l));
      } catch (err) {
        // Else it blocks others until it expires. No signal: cleanup runs after a cancel too,
        // but a cancelled acquire does not wait for it.
        const removing = this.store.delete(Keys.lock(doc.id)).catch(() => {});
        if (!options.signal?.aborted) await removing;
        throw err;
      }
      if (!blocker) return this.hold(doc, ttlMs, options.spendReserve);
      await this.store.delete(Keys.lock(doc.id));
      if (!options.wait) {
        throw new CairnError('BUSY', `repository is locked (${blocker.kind} lock by ${blocker.owner.host}:${blocker.owner.pid} for ${blocker.purpose}, until ${blocker.expiresAt})`, {
          details: { lock: blocker.id },
        });
      }
      // A cancel ends the wait at once (the loop's first check then rejects CANCELLED).
      await delay(this.pollMs * (0.5 + Math.random()), undefined, { signal: options.signal }).catch(() => undefined);
    }
  }

  /** Every lock object, stale ones marked. Unreadable lock objects are reported stale. */
  list(): Promise<LockInfo[]> {
    return this.read(() => true);
  }

  /**
   * The lock objects whose id `accept`s (among those whose id starts with `prefix`), read as `list`
   * reads them; `signal` goes to the store's calls (`CANCELLED` is raised, never taken for an
   * unreadable lock).
   */
  private async read(accept: (id: string) => boolean, prefix = '', signal?: AbortSignal): Promise<LockInfo[]> {
    const out: LockInfo[] = [];
    for await (const o of this.store.list(Keys.locks + prefix, { signal })) {
      if (!accept(o.key.slice(Keys.locks.length))) continue;
      try {
        const doc = JSON.parse((await this.store.get(o.key, undefined, { signal })).toString('utf8')) as LockDoc;
        out.push({ ...doc, stale: isStale(doc) });
      } catch (err) {
        if (isCairnError(err) && err.code === 'NOT_FOUND') continue;
        if (isCairnError(err) && err.code === 'CANCELLED') throw err;
        const id = o.key.slice(Keys.locks.length);
        out.push({ id, kind: 'shared', owner: { host: '?', pid: 0 }, purpose: 'unreadable lock object', createdAt: o.modifiedAt, expiresAt: o.modifiedAt, stale: true });
      }
    }
    return out;
  }

  /** Removes stale locks (or, with `all`, every lock: only when no Cairn process uses the repository). */
  async breakLocks(options: { all?: boolean } = {}): Promise<string[]> {
    const broken: string[] = [];
    for (const l of await this.list()) {
      if (!options.all && !l.stale) continue;
      await this.store.delete(Keys.lock(l.id));
      broken.push(l.id);
    }
    return broken;
  }

  /** Refreshes `doc` every third of `ttlMs` (with `spendReserve` when it was taken so) until released. */
  private hold(doc: LockDoc, ttlMs: number, spendReserve?: boolean): LockHandle {
    let deleted = false;
    let refreshing: Promise<void> = Promise.resolve();
    /** Expiry of the lock object as last written. */
    let expiresAt = Date.parse(doc.expiresAt);
    let lapsed = false;
    let pending = false;
    const timer = setInterval(() => {
      if (pending) return; // one rewrite at a time: an older one landing last would shorten the lock
      pending = true;
      const next = Date.now() + ttlMs;
      const refreshed = { ...doc, expiresAt: new Date(next).toISOString() };
      refreshing = this.store.put(Keys.lock(doc.id), Buffer.from(JSON.stringify(refreshed)), spending(spendReserve)).then(
        () => {
          // Landed after the expiry it replaces: for a while the lock looked stale to others.
          if (Date.now() >= expiresAt) lapsed = true;
          expiresAt = next;
        },
        () => {
          if (Date.now() >= expiresAt) lapsed = true; // retried at the next tick, too late anyway
        },
      ).finally(() => (pending = false));
    }, Math.max(10, ttlMs / 3));
    timer.unref();
    return {
      doc,
      assertHeld: () => {
        if (lapsed || Date.now() >= expiresAt) {
          throw new CairnError('BUSY', `the repository's ${doc.kind} lock (${doc.purpose}) lapsed: it could not be refreshed before it expired, so GC may have run meanwhile`, { details: { lock: doc.id } });
        }
      },
      release: async () => {
        if (deleted) return;
        clearInterval(timer);
        await refreshing; // a refresh landing after the delete would resurrect the lock
        await deleteWithRetries(this.store, Keys.lock(doc.id));
        deleted = true;
      },
    };
  }
}

/** Releases every lock in `locks`, each whatever the others' releases do; rejects with the first failure. */
export async function releaseAll(locks: readonly LockHandle[]): Promise<void> {
  const failed = (await Promise.allSettled(locks.map((l) => l.release()))).find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Deletes `key`, trying three times 50 and 200 ms apart; rejects with the last try's error. */
function deleteWithRetries(store: ObjectStore, key: string): Promise<void> {
  return withRetries(() => store.delete(key), [50, 200]);
}
