/**
 * Walking the store's directory tree: every object under a key prefix (for `list`), and every
 * temporary file (for `sweepTemp`). Walks stream directories (`opendir`), visit only the
 * directories that can hold a match, follow symbolic links to directories (never into a directory
 * they are already in: linkedDirectory), and tolerate entries removed while they walk.
 */
import type { BigIntStats, Dir, Dirent } from 'node:fs';
import { lstat, opendir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ObjectInfo } from '@cairn/core';
import { errnoOf, fsError, isAbsent } from './fs-errors.js';
import { isKeySegment, isShardDirName, isTempName, segmentsToKey } from './key-layout.js';

/** 'dir' also for a symbolic link to a directory (followed, as reads follow it: see linkedDirectory). */
type Kind = 'dir' | 'file' | 'other';

/**
 * The kind of an entry, with an lstat when the filesystem does not report it (some NFS servers).
 * A symbolic link is a 'dir' when it leads to a directory that is not one of the walk's own
 * directories on the way to it (linkedDirectory), else 'other'.
 */
async function kindOf(root: string, segments: readonly string[], entry: Dirent): Promise<Kind | undefined> {
  if (entry.isDirectory()) return 'dir';
  if (entry.isFile()) return 'file';
  const dirPath = join(root, ...segments);
  if (entry.isSymbolicLink()) return (await linkedDirectory(root, segments, entry.name)) ? 'dir' : 'other';
  if (entry.isFIFO() || entry.isSocket() || entry.isBlockDevice() || entry.isCharacterDevice()) return 'other';
  try {
    const st = await lstat(join(dirPath, entry.name));
    if (st.isSymbolicLink()) return (await linkedDirectory(root, segments, entry.name)) ? 'dir' : 'other';
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
  } catch (err) {
    if (isAbsent(err)) return undefined;
    throw fsError(err, `lstat ${entry.name}`);
  }
}

/** What tells one directory from another while a walk runs: device and inode number. */
const identityOf = (st: BigIntStats): string => `${st.dev}:${st.ino}`;

/**
 * Whether the symbolic link `name` in `root/segments…` leads to a directory the walk may enter:
 * true when it does and that directory is none of the directories the walk is in on its way there
 * (`root` and each level of `segments`, by device and inode number), which would make the walk go
 * round for ever. A link to nothing, to a file or to itself is false; a link that cannot be looked
 * at (EACCES, EIO) fails the walk (statOrNothing). Reads follow such links
 * (a key's path is opened through them), so listing follows them too: an operator may move a
 * prefix or a shard directory to another disk behind one. Costs one stat(2) for the link and one
 * per level above it, for links only.
 */
async function linkedDirectory(root: string, segments: readonly string[], name: string): Promise<boolean> {
  const target = await statOrNothing(join(root, ...segments, name), name);
  if (!target?.isDirectory()) return false;
  const id = identityOf(target);
  for (let depth = 0; depth <= segments.length; depth++) {
    const level = await statOrNothing(join(root, ...segments.slice(0, depth)), segments.slice(0, depth).join('/') || '.');
    if (level && identityOf(level) === id) return false;
  }
  return true;
}

/**
 * stat(2) following links, or `undefined` for nothing there (gone, a link to nothing, a link loop
 * the kernel gives up on: ELOOP). Other errors (EACCES, EIO) are thrown: a listing that skipped a
 * directory it could not look at would leave out objects that exist.
 */
async function statOrNothing(path: string, what: string): Promise<BigIntStats | undefined> {
  try {
    return await stat(path, { bigint: true });
  } catch (err) {
    if (isAbsent(err) || errnoOf(err) === 'ELOOP') return undefined;
    throw fsError(err, `stat ${what}`);
  }
}

/** Opens a directory for streaming, or `undefined` when it no longer exists (or is not a directory). */
async function openDir(path: string): Promise<Dir | undefined> {
  try {
    return await opendir(path, { bufferSize: 256 });
  } catch (err) {
    if (isAbsent(err)) return undefined;
    throw fsError(err, `opendir ${path}`);
  }
}

/**
 * Entries of the directory `root/segments…` with their kinds (only those whose name `wanted`
 * takes, judged before any lstat); nothing when it vanished during the walk.
 */
async function* entries(root: string, segments: readonly string[], wanted: (name: string) => boolean = () => true): AsyncGenerator<{ name: string; kind: Kind }> {
  const dirPath = join(root, ...segments);
  const dir = await openDir(dirPath);
  if (!dir) return;
  try {
    for await (const entry of dir) {
      if (!wanted(entry.name)) continue;
      const kind = await kindOf(root, segments, entry);
      if (kind) yield { name: entry.name, kind };
    }
  } catch (err) {
    if (isAbsent(err)) return;
    throw fsError(err, `readdir ${dirPath}`);
  }
}

/**
 * Called with the device number of each object found, before it is yielded; a rejection ends the
 * walk with that error (the store's check that the file is in its pinned directory's tree).
 */
export type DeviceCheck = (dev: number) => Promise<void>;

/**
 * Every object whose key starts with `prefix` (a validated key prefix), each once; `check` sees
 * each one's device first. Starts at the directory of the prefix's complete segments; at that
 * level it descends only into directories whose name starts with the partial last segment, or —
 * for the files of a shard directory — whose two-hex name the partial segment starts with.
 */
export async function* listObjects(root: string, prefix: string, check: DeviceCheck): AsyncGenerator<ObjectInfo> {
  const cut = prefix.lastIndexOf('/');
  const base = cut < 0 ? [] : prefix.slice(0, cut).split('/');
  const partial = prefix.slice(cut + 1);
  yield* walkObjects(root, base, prefix, partial, false, check);
}

/**
 * How many times each directory is read. readdir(2) makes no promise about entries removed or
 * added while it runs, and replacing an object (rename over it) is both: tmpfs gives the new
 * entry a freed position that the read may have passed already, so one read misses an object
 * replaced meanwhile although its key was never absent (a lock object refreshed, a catalog record
 * updated). A second read finds every such object, unless it was replaced again during that read
 * too; names met before are not looked at again (no lstat), so it costs one more readdir.
 */
const READ_PASSES = 2;

/** Files stat'ed at once, and shard directories listed at once (each fs call is a thread-pool round trip). */
const STAT_BATCH = 32;
const SHARD_BATCH = 8;

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function* walkObjects(
  root: string,
  segments: string[],
  prefix: string,
  partial: string | undefined,
  filesOnly: boolean,
  check: DeviceCheck,
): AsyncGenerator<ObjectInfo> {
  const dirPath = join(root, ...segments);
  const seen = new Set<string>();
  const files: { path: string; key: string }[] = [];
  const shards: { segments: string[]; filesOnly: boolean }[] = [];
  const subtrees: string[][] = [];
  for (let pass = 0; pass < READ_PASSES; pass++) {
    for await (const { name, kind } of entries(root, segments, (n) => isKeySegment(n) && !seen.has(n))) {
      if (seen.has(name)) continue; // met twice in one pass: replaced, and listed again at its new place
      seen.add(name);
      if (kind === 'dir' && !filesOnly) {
        const below = [...segments, name];
        if (partial === undefined || name.startsWith(partial)) {
          if (isShardDirName(name)) shards.push({ segments: below, filesOnly: false });
          else subtrees.push(below);
        } else if (isShardDirName(name) && partial.startsWith(name)) {
          shards.push({ segments: below, filesOnly: true });
        }
      } else if (kind === 'file') {
        const key = segmentsToKey(segments, name);
        if (key !== undefined && key.startsWith(prefix)) files.push({ path: join(dirPath, name), key });
      }
    }
  }
  for (let i = 0; i < files.length; i += STAT_BATCH) {
    const found = await Promise.all(files.slice(i, i + STAT_BATCH).map((f) => statObject(f.path, f.key)));
    for (const object of found) {
      if (!object) continue;
      await check(object.dev);
      yield object.info;
    }
  }
  // Shard directories are flat (one level of files), so several are listed at once, each whole.
  for (let i = 0; i < shards.length; i += SHARD_BATCH) {
    const lists = await Promise.all(shards.slice(i, i + SHARD_BATCH).map((d) => collect(walkObjects(root, d.segments, prefix, undefined, d.filesOnly, check))));
    for (const list of lists) yield* list;
  }
  for (const below of subtrees) yield* walkObjects(root, below, prefix, undefined, false, check);
}

/**
 * Size and time of the file holding `key`, with the device number it is on, or `undefined` when
 * it is gone or not a file.
 */
export async function statObject(path: string, key: string): Promise<{ info: ObjectInfo; dev: number } | undefined> {
  try {
    const st = await lstat(path);
    if (!st.isFile()) return undefined;
    return { info: { key, size: st.size, modifiedAt: st.mtime.toISOString() }, dev: st.dev };
  } catch (err) {
    if (isAbsent(err)) return undefined;
    throw fsError(err, `stat ${key}`);
  }
}

/**
 * The bytes an unlink(2) of the file whose lstat is `st` frees: its allocated blocks when this is
 * its only link; none while another name holds it (an only-if-absent put killed between its link
 * and the unlink of its temporary name leaves the object with a second link, the temporary one).
 */
export function freedByUnlink(st: { nlink: number; blocks: number }): number {
  return st.nlink > 1 ? 0 : st.blocks * 512;
}

/**
 * Every temporary file in the tree (below `root/segments…`, default all of it, following symbolic
 * links to directories as listing does), as `{ path, mtimeMs, bytes, dev }` (bytes: what removing
 * it frees, freedByUnlink; dev: its device number); entries removed meanwhile are skipped.
 */
export async function* tempFiles(root: string, segments: readonly string[] = []): AsyncGenerator<{ path: string; mtimeMs: number; bytes: number; dev: number }> {
  for await (const { name, kind } of entries(root, segments, (n) => isKeySegment(n) || isTempName(n))) {
    const path = join(root, ...segments, name);
    if (kind === 'dir' && isKeySegment(name)) {
      yield* tempFiles(root, [...segments, name]);
    } else if (kind === 'file' && isTempName(name)) {
      try {
        const st = await lstat(path);
        yield { path, mtimeMs: st.mtimeMs, bytes: freedByUnlink(st), dev: st.dev };
      } catch (err) {
        if (!isAbsent(err)) throw fsError(err, `stat ${name}`);
      }
    }
  }
}
