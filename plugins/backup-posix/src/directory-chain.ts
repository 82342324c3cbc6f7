/**
 * The directories between a store's directory and its keys, made durable. A put may rely on its
 * key's directory only once every directory from the store's directory down to it exists and
 * its entry in its parent has been fsynced. An instance knows that of the directories it made
 * durable itself; any other directory — made by another writer, which may still be fsyncing its
 * parent, or one whose parent fsync failed — gets its parent fsynced again before it is relied
 * on. A directory known durable costs no system call.
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CairnError } from '@cairn/core';
import { fsyncDir } from './durable-fs.js';
import { DRIVER, errnoOf, writeError } from './fs-errors.js';

/** Bound on the directories remembered (the chunked repository's keys use a few hundred). */
const REMEMBERED_MAX = 65_536;

export class DirectoryChain {
  /** Directories whose entries, and their ancestors' up to the root, are known durable. */
  private readonly durable = new Set<string>();

  /** `root`: the store's directory, which is never created here. */
  constructor(private readonly root: string) {}

  /**
   * `root/segments…` (`root` itself for no segments), created one level at a time where
   * missing, returned once it and every directory between it and `root` has its entry fsynced
   * in its parent. Idempotent and safe against concurrent creators, in this process or others.
   * `CONFLICT` when a component exists as a file; `UNAVAILABLE` when `root` (or a directory on
   * the way) is gone, for ENOSPC and for a failed fsync (the next call fsyncs again).
   */
  async ensure(segments: readonly string[]): Promise<string> {
    const dir = join(this.root, ...segments);
    if (segments.length === 0 || this.durable.has(dir)) return dir;
    const st = await stat(dir).catch((err: unknown) => {
      if (errnoOf(err) === 'ENOENT') return undefined;
      throw errnoOf(err) === 'ENOTDIR' ? collision(segments, err) : writeError(err, `stat ${segments.join('/')}`);
    });
    if (st && !st.isDirectory()) throw collision(segments);
    for (let depth = 1; depth <= segments.length; depth++) {
      const level = join(this.root, ...segments.slice(0, depth));
      if (this.durable.has(level)) continue;
      if (!st) await this.mkdirOne(segments.slice(0, depth));
      await fsyncDir(dirname(level)).catch((err: unknown) => {
        throw writeError(err, `fsync of the directory holding ${segments.slice(0, depth).join('/')}`);
      });
      if (this.durable.size >= REMEMBERED_MAX) this.durable.clear();
      this.durable.add(level);
    }
    return dir;
  }

  /**
   * Forgets every directory known durable, so the next `ensure` checks (and recreates) them:
   * called after a write failed in a way a retry may fix, such as a directory removed from under
   * the store.
   */
  forget(): void {
    this.durable.clear();
  }

  /** Creates one level; an existing directory is fine (its creator may not have fsynced yet: the caller does). */
  private async mkdirOne(segments: readonly string[]): Promise<void> {
    const dir = join(this.root, ...segments);
    try {
      await mkdir(dir);
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
  }
}

/**
 * Creates the absolute directory `dir` and any missing parents (mkdir -p), durably: the parent of
 * every directory created is fsynced. Errors are thrown as they are.
 */
export async function createDirectories(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true }); // the top directory created, if any
  if (first === undefined) return;
  for (let made = dir; made.startsWith(first); made = dirname(made)) {
    await fsyncDir(dirname(made));
    if (made === first) break;
  }
}

function collision(segments: readonly string[], cause?: unknown): CairnError {
  return new CairnError('CONFLICT', `a key's directory ${segments.join('/')} collides with an object`, { driver: DRIVER, cause });
}
