/**
 * The directories between a store's directory and its keys, made durable. A put may rely on its
 * key's directory only once every directory from the store's directory down to it exists and
 * its entry in its parent has been fsynced. An instance knows that of the directories it made
 * durable itself, each by its identity (see identityOf); any other directory — made by another
 * writer, which may still be fsyncing its parent, one whose parent fsync failed, or one removed
 * and made again at the same path since — gets its parent fsynced again before a put in it
 * resolves. A directory known durable costs no system call in `ensure`; `sync`, which a put ends
 * with anyway, checks the identity from the handle it fsyncs through (one fstat).
 */
import type { BigIntStats } from 'node:fs';
import { chmod, mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CairnError } from '@cairn/core';
import { DIRECTORY_MODE, fsyncDir, fsyncDirStat } from './durable-fs.js';
import { DRIVER, errnoOf, isAbsent, writeError } from './fs-errors.js';

/** Bound on the directories remembered (the chunked repository's keys use a few hundred). */
const REMEMBERED_MAX = 65_536;

/**
 * What tells a directory from one made later at the same path: device, inode number and birth
 * time. The inode number alone does not (ext4 hands the freed number to the next mkdir). Where
 * the file system records no birth time (it reads 0: some NFS clients and servers) a directory
 * made again under a reused inode number passes for the old one: its parent is not fsynced again.
 */
function identityOf(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.birthtimeNs}`;
}

export class DirectoryChain {
  /** Directories whose entries, and their ancestors' up to the root, are known durable, with their identities. */
  private readonly durable = new Map<string, string>();

  /** The root's device and inode number from `pinRoot`; undefined: the root is not checked. */
  private pinned: string | undefined;
  /** The root's device number from `pinRoot`, as a decimal string (see checkDevice). */
  private pinnedDevice: string | undefined;

  /** `root`: the store's directory, which is never created here. */
  constructor(private readonly root: string) {}

  /**
   * Pins the root to the directory `st` describes (its stat at open): from then on no directory is
   * created (mkdirOne), and `ensure([])` returns the root for no write directly in it, unless the
   * root's path still leads to that directory (same device and inode number). So a store on a mount
   * point whose mount went away (or whose directory was replaced) writes nothing on what is now
   * there. One stat(2) each time; none for a put under a directory known durable.
   */
  pinRoot(st: BigIntStats): void {
    this.pinned = `${st.dev}:${st.ino}`;
    this.pinnedDevice = String(st.dev);
  }

  /**
   * For a read that found a file, `dev` its device number: resolves at once when the root is not
   * pinned or the file is on the pinned root's device; else checkRoot (a file of another file
   * system is either under a mount inside the store, then fine, or on the disk under a mount point
   * whose mount went away, then `UNAVAILABLE`). Costs nothing for a file of the pinned device.
   */
  async checkDevice(dev: number | bigint): Promise<void> {
    if (this.pinnedDevice === undefined || String(dev) === this.pinnedDevice) return;
    await this.checkRoot();
  }

  /**
   * Resolves when the root is not pinned or its path still leads to the directory pinned; else
   * `UNAVAILABLE` (details.directory = the root): unmounted, replaced, or gone.
   */
  async checkRoot(): Promise<void> {
    if (this.pinned === undefined) return;
    const st = await stat(this.root, { bigint: true }).catch((err: unknown) => {
      if (isAbsent(err)) return undefined;
      throw writeError(err, `stat of the store's directory ${this.root}`);
    });
    if (st?.isDirectory() && `${st.dev}:${st.ino}` === this.pinned) return;
    const message = `the store's directory ${this.root} is no longer the directory opened: unmounted or replaced`;
    throw new CairnError('UNAVAILABLE', message, { driver: DRIVER, details: { directory: this.root } });
  }

  /**
   * `root/segments…` (`root` itself for no segments), created one level at a time where
   * missing, returned once it and every directory between it and `root` has its entry fsynced
   * in its parent. Idempotent and safe against concurrent creators, in this process or others.
   * `CONFLICT` when a component exists as a file; `UNAVAILABLE` when `root` (or a directory on
   * the way) is gone, for ENOSPC and for a failed fsync (the next call fsyncs again). With the
   * root pinned (pinRoot), `UNAVAILABLE` when it is no longer the directory pinned, checked for
   * no segments, for a directory not known durable that exists, and before each mkdir.
   */
  async ensure(segments: readonly string[]): Promise<string> {
    const dir = join(this.root, ...segments);
    if (segments.length === 0) {
      await this.checkRoot();
      return dir;
    }
    if (this.durable.has(dir)) return dir;
    const st = await stat(dir).catch((err: unknown) => {
      if (errnoOf(err) === 'ENOENT') return undefined;
      throw errnoOf(err) === 'ENOTDIR' ? collision(segments, err) : writeError(err, `stat ${segments.join('/')}`);
    });
    if (st && !st.isDirectory()) throw collision(segments);
    // One found existing (no mkdir below checks the root) may be the disk's under a mount gone.
    if (st) await this.checkRoot();
    /** Levels known durable from earlier calls, checked below against what is at their paths now. */
    const remembered: string[] = [];
    for (let depth = 1; depth <= segments.length; depth++) {
      const level = join(this.root, ...segments.slice(0, depth));
      if (this.durable.has(level)) {
        remembered.push(level);
        continue;
      }
      if (!st) await this.mkdirOne(segments.slice(0, depth));
      // Taken before the fsync: a directory that replaces this one after it is seen by `sync`.
      const identity = identityOf(
        await stat(level, { bigint: true }).catch((err: unknown) => {
          throw writeError(err, `stat ${segments.slice(0, depth).join('/')}`);
        }),
      );
      await fsyncDir(dirname(level)).catch((err: unknown) => {
        throw writeError(err, `fsync of the directory holding ${segments.slice(0, depth).join('/')}`);
      });
      if (this.durable.size >= REMEMBERED_MAX) this.durable.clear();
      this.durable.set(level, identity);
    }
    // A level made durable here may sit in a remembered directory that was removed and made
    // again since (by someone who may not have fsynced its parent): `sync` checks only the last
    // level's identity, so the remembered ones are checked here, after the new levels' identities
    // were taken (a remembered directory replaced after that took the new levels with it, which
    // `sync` sees). One that changed is forgotten, with every level below the root, and all of
    // them are ensured again.
    if (remembered.length > 0 && remembered.length < segments.length) {
      for (const level of remembered) {
        const now = await stat(level, { bigint: true }).catch(() => undefined);
        if (now === undefined || this.durable.get(level) !== identityOf(now)) {
          this.forgetChain(segments);
          return this.ensure(segments);
        }
      }
    }
    return dir;
  }

  /**
   * fsyncs `root/segments…` (a directory `ensure` returned), making the entries just published in
   * it durable, and resolves once its own entry and its ancestors' are durable too: at no further
   * cost when the directory fsynced is the one `ensure` made durable; else (removed and made again
   * by someone else since, who may not have fsynced its parent; or forgotten) after every level is
   * ensured again. Errors of the fsync are thrown as they are; those of `ensure` as it throws them.
   */
  async sync(segments: readonly string[]): Promise<void> {
    const dir = join(this.root, ...segments);
    if (segments.length === 0) return fsyncDir(dir); // the root's own entry is not the store's to keep
    const fsynced = identityOf(await fsyncDirStat(dir));
    if (this.durable.get(dir) === fsynced) return;
    this.forgetChain(segments);
    await this.ensure(segments);
  }

  /**
   * Forgets every directory known durable, so the next `ensure` checks (and recreates) them:
   * called after a write failed in a way a retry may fix, such as a directory removed from under
   * the store.
   */
  forget(): void {
    this.durable.clear();
  }

  /** Forgets every level from the root down to `root/segments…`, so `ensure` makes each durable again. */
  private forgetChain(segments: readonly string[]): void {
    for (let depth = 1; depth <= segments.length; depth++) this.durable.delete(join(this.root, ...segments.slice(0, depth)));
  }

  /**
   * Creates one level, mode DIRECTORY_MODE whatever the umask; an existing directory is fine and
   * keeps its mode (its creator may not have fsynced yet: the caller does). With the root pinned, only while it is the directory pinned (checkRoot).
   */
  private async mkdirOne(segments: readonly string[]): Promise<void> {
    const dir = join(this.root, ...segments);
    await this.checkRoot();
    try {
      await mkdir(dir, DIRECTORY_MODE);
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'EEXIST') {
        if ((await stat(dir).catch(() => undefined))?.isDirectory()) return;
        throw collision(segments, err);
      }
      if (code === 'ENOTDIR') throw collision(segments, err);
      if (code === 'ENOENT') {
        throw new CairnError('UNAVAILABLE', `the store's directory ${this.root}, or one in it, is missing`, { driver: DRIVER, cause: err });
      }
      throw writeError(err, `mkdir ${segments.join('/')}`);
    }
    // The mode again, past the umask: only on the directory this call made (one found is left as it is).
    await chmod(dir, DIRECTORY_MODE).catch((err: unknown) => {
      throw writeError(err, `chmod ${segments.join('/')}`);
    });
  }
}

function collision(segments: readonly string[], cause?: unknown): CairnError {
  return new CairnError('CONFLICT', `a key's directory ${segments.join('/')} collides with an object`, { driver: DRIVER, cause });
}
