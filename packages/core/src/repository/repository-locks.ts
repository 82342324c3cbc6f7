import { setTimeout as delay } from 'node:timers/promises';
import type { ObjectInfo, ObjectStore } from '../contracts/object-store.js';
import { CairnError, hasCode, isCairnError, throwIfAborted, toCairnError } from '../errors.js';
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
  /**
   * Expired, or held by a process of this host that no longer runs. Stale locks block nothing.
   * A `corrupt` lock is stale only once its `expiresAt` (its object's modification time plus the
   * lock lifetime) has passed.
   */
  stale: boolean;
  /**
   * Set when the lock object is not a lock document (not JSON, or without a known kind, an owner or
   * an expiry, or larger than LOCK_MAX_BYTES): its holder and kind are unknown, so while it is live it conflicts with every lock
   * whose check reads it, and `expiresAt` is its object's modification time plus the reader's lock
   * lifetime (a holder that still refreshes it keeps it live). `kind`, `owner` and `purpose` are
   * placeholders.
   */
  corrupt?: true;
}

export interface LockHandle {
  doc: LockDoc;
  /**
   * Throws `BUSY` unless the lock still counts as held: more than the lapse margin (a third of its
   * lifetime, LAPSE_SHARE) is left on the holder's clock until the expiry of its last rewrite that
   * landed, and no rewrite landed (or failed) inside the margin. A lock whose refreshes fail (a
   * store outage) reaches the margin while another host, whose clock may run ahead by less than
   * the margin, still sees it live; past it, that host may see it stale and run GC. Once a
   * rewrite lands inside the margin the lock has lapsed for good: the check fails from then on.
   * A job checks before it commits (a backup, before its manifest: whatever it reused may be
   * gone) and again once its commit landed (a backup stalled in its manifest write past the lapse
   * takes the manifest back: backup-writer.ts), and GC before every delete.
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
  /** This lock's lifetime without a refresh, in ms (refreshed every sixth of it: LockHandle.assertHeld). Default: the instance's. */
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

/**
 * The share of a lock's lifetime its holder keeps as a margin (LockHandle.assertHeld): with a
 * lifetime of 5 minutes, the holder stops 100 s before its last written expiry. Hosts must keep
 * their clocks closer than that (less the time of one delete). Holders rewrite their lock every
 * REFRESH_SHARE of its lifetime, so a live holder normally has 5/6 of it left and two rewrites
 * in a row may fail (the third, a sixth later, still lands before the margin): a store hiccup
 * does not stop a job.
 */
const LAPSE_SHARE = 1 / 3;
const REFRESH_SHARE = 1 / 6;

/** Reads of a lock object that fail are tried again after these delays (an NFS ESTALE while its holder renames a rewrite over it clears on the next read). */
const LOCK_READ_RETRY_MS = [50, 200];

/**
 * The largest lock object read, in bytes (a lock document is a few hundred). A larger one is
 * LockInfo.corrupt: not read when its listing shows it larger, and judged corrupt when the bytes
 * read are (it was replaced by a larger one since the listing: then it was read whole).
 */
export const LOCK_MAX_BYTES = 64 * 1024;

const KINDS: readonly string[] = ['shared', 'exclusive', 'volume', 'record'] satisfies LockKind[];

/** True when a lock no longer protects anything: expired, or its owner on this host is gone. */
export function isStale(doc: LockDoc, now = Date.now()): boolean {
  if (Date.parse(doc.expiresAt) < now) return true;
  return !ownerMayBeAlive(doc.owner);
}

/** The put options that mark a write as one that may spend the store's space reserve (none when not). */
export function spending(spendReserve: boolean | undefined): { spendReserve?: true } {
  return spendReserve ? { spendReserve: true } : {};
}

/** A lock as read: its judgement, the object as listed, and the bytes read (none when oversize). */
interface SeenLock {
  info: LockInfo;
  object: ObjectInfo;
  data?: Buffer;
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
    /**
     * Lock lifetime in ms without a refresh. Default 5 minutes; refreshed every sixth of it. Also
     * the lifetime given to a corrupt lock object from its modification time (LockInfo.corrupt).
     */
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
        // A corrupt lock among them lives as long as the locks this check reads: a record lock's
        // lifetime (this acquire's) for record locks, the instance's for the others.
        blocker = (await this.read(relevant, prefix, options.signal, prefix ? ttlMs : this.ttlMs)).find((l) => l.id !== doc.id && !l.stale && (l.corrupt || conflicts(doc, l)));
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
        const by = blocker.corrupt ? `lock object ${blocker.id} is not a lock document; it counts as held` : `${blocker.kind} lock by ${blocker.owner.host}:${blocker.owner.pid} for ${blocker.purpose}`;
        throw new CairnError('BUSY', `repository is locked (${by}, until ${blocker.expiresAt})`, {
          details: { lock: blocker.id },
        });
      }
      // A cancel ends the wait at once (the loop's first check then rejects CANCELLED).
      await delay(this.pollMs * (0.5 + Math.random()), undefined, { signal: options.signal }).catch(() => undefined);
    }
  }

  /**
   * Every lock object, stale ones marked, corrupt ones as LockInfo.corrupt says. Rejects (as
   * `read` does) when a lock object cannot be read.
   */
  list(): Promise<LockInfo[]> {
    return this.read(() => true);
  }

  /**
   * The lock objects whose id `accept`s (among those whose id starts with `prefix`); `signal` goes
   * to the store's calls (`CANCELLED` is raised). A lock deleted since the listing (`NOT_FOUND`)
   * was released and is skipped. A lock whose read keeps failing (tried three times, 50 and 200 ms
   * apart) may be live, so it is never taken for stale: the read rejects with the store's error
   * (its code kept, `details.lock` naming the lock), and whatever the caller was about to do
   * (take a lock, break stale ones) is not done. The store's code rather than `BUSY`: nothing is
   * known to hold the repository, the store failed, and its code says whether a retry may help.
   * A lock object that is read but is not a lock document, or is larger than LOCK_MAX_BYTES, is
   * LockInfo.corrupt, live for `corruptTtlMs` from its modification time (default the instance's
   * lifetime).
   */
  private async read(accept: (id: string) => boolean, prefix = '', signal?: AbortSignal, corruptTtlMs = this.ttlMs): Promise<LockInfo[]> {
    return (await this.readSeen(accept, prefix, signal, corruptTtlMs)).map((l) => l.info);
  }

  /** As `read`, with what each judgement was made from (breakLocks compares it before deleting). */
  private async readSeen(accept: (id: string) => boolean, prefix = '', signal?: AbortSignal, corruptTtlMs = this.ttlMs): Promise<SeenLock[]> {
    const out: SeenLock[] = [];
    for await (const o of this.store.list(Keys.locks + prefix, { signal })) {
      const id = o.key.slice(Keys.locks.length);
      if (!accept(id)) continue;
      const data = await this.readData(o, id, signal);
      if (data === 'gone') continue;
      const info = data === 'oversize' ? corruptLock(id, o.modifiedAt, corruptTtlMs) : parseLock(id, data, o.modifiedAt, corruptTtlMs);
      out.push({ info, object: o, data: data === 'oversize' ? undefined : data });
    }
    return out;
  }

  /**
   * The bytes of the lock object `o` (as listed), `gone` when it was deleted since, `oversize` when
   * it is larger than LOCK_MAX_BYTES (not read when its listed size says so). Rejects as `read` says.
   */
  private async readData(o: ObjectInfo, id: string, signal?: AbortSignal): Promise<Buffer | 'gone' | 'oversize'> {
    if (o.size > LOCK_MAX_BYTES) return 'oversize';
    const data = await readLockObject(id, () => this.store.get(o.key, undefined, { signal }), signal);
    return data !== 'gone' && data.length > LOCK_MAX_BYTES ? 'oversize' : data;
  }

  /**
   * Whether the lock judged stale from `seen` is still as it was judged, read again: its bytes
   * the same, then (head, after that read, so a rewrite landing between the two is seen) its size
   * and modification time the listing's. False when it was rewritten since the listing (a
   * holder's refresh: the lock may be live again) or is gone. Rejects as `read` does when it
   * cannot be read.
   */
  private async unchanged(seen: SeenLock): Promise<boolean> {
    const { object: o, info } = seen;
    const data = await this.readData(o, info.id);
    if (data === 'gone') return false;
    const same = data === 'oversize' ? seen.data === undefined : seen.data !== undefined && data.equals(seen.data);
    if (!same) return false;
    const now = await readLockObject(info.id, () => this.store.head(o.key));
    if (now === 'gone') return false;
    // Compared as times too: a store may spell one time differently in a listing and a head.
    return now.size === o.size && (now.modifiedAt === o.modifiedAt || Date.parse(now.modifiedAt) === Date.parse(o.modifiedAt));
  }

  /**
   * Removes stale locks (or, with `all`, every lock: only when no Cairn process uses the repository).
   * Without `all`, a lock that cannot be read makes it reject (see `read`) having deleted nothing;
   * with `all`, locks are deleted as listed, unread. Returns the ids deleted.
   *
   * Without `all`, each stale lock is read again just before its delete (`unchanged`): one
   * rewritten since the listing (its holder refreshed it after all) or gone is left alone, and
   * one that cannot be read then makes it reject, having deleted only the locks before it. The
   * store has no conditional delete, so a refresh that lands between that second read and the
   * delete (one head and one delete call) is still deleted with the lock: its holder's next
   * refresh writes it again, and until then other processes may take it for released.
   */
  async breakLocks(options: { all?: boolean } = {}): Promise<string[]> {
    const broken: string[] = [];
    if (options.all) {
      const ids: string[] = [];
      for await (const o of this.store.list(Keys.locks)) ids.push(o.key.slice(Keys.locks.length));
      for (const id of ids) {
        await this.store.delete(Keys.lock(id));
        broken.push(id);
      }
      return broken;
    }
    for (const seen of (await this.readSeen(() => true)).filter((l) => l.info.stale)) {
      if (!(await this.unchanged(seen))) continue;
      await this.store.delete(seen.object.key);
      broken.push(seen.info.id);
    }
    return broken;
  }

  /**
   * Refreshes `doc` every REFRESH_SHARE of `ttlMs` (with `spendReserve` when it was taken so) until
   * released; the handle counts it held while more than LAPSE_SHARE of `ttlMs` is left.
   */
  private hold(doc: LockDoc, ttlMs: number, spendReserve?: boolean): LockHandle {
    let deleted = false;
    let refreshing: Promise<void> = Promise.resolve();
    const margin = ttlMs * LAPSE_SHARE;
    /** Expiry of the lock object as last written, less the margin: the holder stops here. */
    let heldUntil = Date.parse(doc.expiresAt) - margin;
    let lapsed = false;
    let pending = false;
    const period = Math.max(10, ttlMs * REFRESH_SHARE);
    const refresh = (): void => {
      if (pending) return; // one rewrite at a time: an older one landing last would shorten the lock
      pending = true;
      const next = Date.now() + ttlMs;
      const refreshed = { ...doc, expiresAt: new Date(next).toISOString() };
      refreshing = this.store.put(Keys.lock(doc.id), Buffer.from(JSON.stringify(refreshed)), spending(spendReserve)).then(
        () => {
          // Landed inside the margin of the expiry it replaces: a host whose clock runs ahead may
          // have seen the lock stale meanwhile.
          if (Date.now() >= heldUntil) lapsed = true;
          heldUntil = next - margin;
        },
        () => {
          if (Date.now() >= heldUntil) lapsed = true; // retried at the next tick, too late anyway
        },
      ).finally(() => (pending = false));
    };
    const timer = setInterval(refresh, period);
    timer.unref();
    // Counted from the lock's write, not from now: an acquire that took long (slow conflict reads,
    // a slow fsync) would otherwise leave its first rewrite to land inside the margin, and the
    // lock lapsed for good with every rewrite landing. Rewritten at once when a period has passed.
    if (Date.now() - (Date.parse(doc.expiresAt) - ttlMs) >= period) refresh();
    return {
      doc,
      assertHeld: () => {
        if (lapsed || Date.now() >= heldUntil) {
          throw new CairnError('BUSY', `the repository's ${doc.kind} lock (${doc.purpose}) lapsed: it could not be refreshed in time (less than a third of its lifetime was left), so GC may have run meanwhile`, { details: { lock: doc.id } });
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


/**
 * One read of lock object `id` (`call`: its get or head), tried again after each of
 * LOCK_READ_RETRY_MS while it fails otherwise than NOT_FOUND or CANCELLED: `gone` when it is not
 * there. Any other failure is the store's error, its code kept, saying the lock may be live
 * (`details.lock` naming it); `CANCELLED` as it is, once `signal` aborted.
 */
async function readLockObject<T>(id: string, call: () => Promise<T>, signal?: AbortSignal): Promise<T | 'gone'> {
  try {
    const retryable = (err: unknown): boolean => !hasCode(err, 'NOT_FOUND') && !hasCode(err, 'CANCELLED');
    return await withRetries(call, LOCK_READ_RETRY_MS, retryable, signal);
  } catch (err) {
    if (hasCode(err, 'NOT_FOUND')) return 'gone';
    throwIfAborted(signal);
    const e = toCairnError(err);
    if (e.code === 'CANCELLED') throw e;
    throw new CairnError(e.code, `lock ${id} could not be read, so it may be live: ${e.message}`, { cause: err, details: { ...e.details, lock: id } });
  }
}
/** Deletes `key`, trying three times 50 and 200 ms apart; rejects with the last try's error. */
function deleteWithRetries(store: ObjectStore, key: string): Promise<void> {
  return withRetries(() => store.delete(key), [50, 200]);
}

/**
 * The LockInfo of the lock object `id` holding `data`, last written at `modifiedAt` (ObjectInfo).
 * The id is the object's, whatever the document says (breakLocks deletes by it). Data that is not
 * a lock document is LockInfo.corrupt (corruptLock): live until `modifiedAt` + `ttlMs` (and for good when the
 * store gave no readable modification time: `cairn repo unlock --force` removes it).
 */
function parseLock(id: string, data: Buffer, modifiedAt: string, ttlMs: number, now = Date.now()): LockInfo {
  let doc: unknown;
  try {
    doc = JSON.parse(data.toString('utf8'));
  } catch {
    doc = undefined;
  }
  if (isLockDoc(doc)) return { ...doc, id, stale: isStale(doc, now) };
  return corruptLock(id, modifiedAt, ttlMs, now);
}

/** The LockInfo.corrupt of the lock object `id` last written at `modifiedAt`: live until then plus `ttlMs` (see parseLock). */
function corruptLock(id: string, modifiedAt: string, ttlMs: number, now = Date.now()): LockInfo {
  const until = Date.parse(modifiedAt) + ttlMs;
  const known = Number.isFinite(until);
  return {
    id,
    kind: id.startsWith(RECORD_LOCK_PREFIX) ? 'record' : 'exclusive',
    owner: { host: '?', pid: 0 },
    purpose: 'corrupt lock object',
    createdAt: modifiedAt,
    expiresAt: known ? new Date(until).toISOString() : modifiedAt,
    stale: known && until < now,
    corrupt: true,
  };
}

/** Whether `doc` has what judging a lock needs: a known kind, an owner, an expiry that parses. */
function isLockDoc(doc: unknown): doc is LockDoc {
  const d = doc as { kind?: unknown; owner?: { host?: unknown; pid?: unknown } | null; expiresAt?: unknown } | null | undefined;
  return (
    typeof d === 'object' && d !== null &&
    typeof d.kind === 'string' && KINDS.includes(d.kind) &&
    typeof d.owner === 'object' && d.owner !== null && typeof d.owner.host === 'string' && typeof d.owner.pid === 'number' &&
    typeof d.expiresAt === 'string' && Number.isFinite(Date.parse(d.expiresAt))
  );
}
