import { randomBytes } from 'node:crypto';
import { link, lstat, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** How writeNewFileDurably and writeFileAtomic make their new file. */
export interface NewFileOptions {
  /**
   * Runs on the new file's descriptor right after its exclusive creation, before anything is
   * written (`path`: where it was created), e.g. to give it an owner. Its failure fails the write,
   * the new file removed.
   */
  onCreated?(fh: FileHandle, path: string): Promise<void>;
}

/**
 * Replaces `path` with `data` atomically and durably: a temp file `.<name>.<random>.tmp` in the
 * same directory is written and fsynced, renamed over `path`, and the directory is fsynced. A
 * reader sees the old or the new content, never a mix; after return the new content survives a
 * power cut. On failure the temp file is removed. Idempotent. `options` as writeNewFileDurably's,
 * for the temp file.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, options: NewFileOptions = {}): Promise<void> {
  const tmp = tempPathBeside(path);
  await writeNewFileDurably(tmp, data, options);
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dirname(path));
}

/** A fresh temporary name in `path`'s directory: `.<name>.<random>.tmp`. */
export function tempPathBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Creates the file `path` exclusively (O_CREAT|O_EXCL: a link planted there is not followed),
 * opened for writing, with `mode` (default 0600) whatever the umask: a umask only removes bits, so
 * when the created file lacks some of `mode`'s it is set again by fchmod (which the umask does not
 * touch). A file system that holds no modes (vfat: every file shows the mount's mode) is left as
 * it is when that mode already holds all of `mode`'s bits, so it is not refused a chmod it cannot
 * store. On a failure after the create the file is closed and removed; EEXIST leaves the existing
 * file alone.
 */
export async function openOwnerOnly(path: string, mode = 0o600): Promise<FileHandle> {
  const fh = await open(path, 'wx', mode);
  try {
    if (((await fh.stat()).mode & mode) !== mode) await fh.chmod(mode);
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw err;
  }
  return fh;
}

/**
 * Creates the file `path` exclusively (O_EXCL, openOwnerOnly: mode 0600 whatever the umask),
 * writes `data` and fsyncs it: durable once this resolves. On any failure, the close's included
 * (NFS reports write-back errors such as ENOSPC or EDQUOT again at close), the file it created is
 * removed and the first error is thrown: a failed write's, not that of the close after it.
 * `options.onCreated` runs before the write.
 */
export async function writeNewFileDurably(path: string, data: Uint8Array | string, options: NewFileOptions = {}): Promise<void> {
  const fh = await openOwnerOnly(path);
  try {
    try {
      await options.onCreated?.(fh, path);
      await fh.writeFile(data);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
    await fh.close();
  } catch (err) {
    await unlink(path).catch(() => {});
    throw err;
  }
}

/** What link(2) says where the file system has no hard links (vfat: EPERM; some SMB and FUSE mounts: the others). */
const NO_HARD_LINKS: ReadonlySet<string> = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** Whether a link(2) (linkIfAbsent) of a file this process made failed because the file system has no hard links. */
export function isNoHardLinks(err: unknown): boolean {
  return NO_HARD_LINKS.has(String((err as NodeJS.ErrnoException | null)?.code));
}

/**
 * Links `temp` to `final` unless `final` exists: true when linked, false when `final` already
 * existed. Atomic across processes and NFS clients. An EEXIST after a lost NFS reply is resolved
 * the way open(2) recommends: if `temp` now has two links, our link did succeed. Other errors
 * (EPERM or ENOTSUP where the file system has no hard links: isNoHardLinks) are thrown as they are.
 */
export async function linkIfAbsent(temp: string, final: string): Promise<boolean> {
  try {
    await link(temp, final);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await lstat(temp)).nlink >= 2;
  }
}

/**
 * fsyncs a directory so that entries created, renamed or removed in it survive a crash.
 * Filesystems that cannot fsync a directory (EINVAL, ENOTSUP: some NFS and FUSE mounts) are
 * tolerated: there, rename is as durable as the filesystem makes it.
 */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
  } finally {
    await fh.close().catch(() => undefined);
  }
}
