import { constants } from 'node:fs';
import { mkdir, open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { makeDirectories, syncDir, type NewFileOptions } from '@cairn/core';

/**
 * Who owns what the driver makes. A volumes directory may be shared between its owner and root
 * (`sudo cairn …`): a file root creates there would be root's, mode 0600, and its owner could no
 * longer read it (`listVolumes` failing EACCES on a sidecar, a status probe on a writer lock).
 * So, when this process runs as root and the directory a new entry is made in belongs to another
 * user, the entry is given that directory's owner and group. Modes are never widened.
 *
 * Only entries this process has just created itself are changed, through their own descriptor
 * (files made with O_CREAT|O_EXCL, which never follows a symlink) or a directory opened with
 * O_NOFOLLOW right after its mkdir: a symlink or link planted in the directory never redirects
 * a chown to another file. File systems that refuse the change (a root-squashing NFS mount, a
 * uid not mapped in this user namespace) leave the entry as created: EPERM and EINVAL are ignored.
 */

export interface Owner {
  uid: number;
  gid: number;
}

/** errno values of fchown meaning "this file system will not do it here". */
const CANNOT_CHOWN = new Set(['EPERM', 'EINVAL']);

/**
 * The owner new entries in directory `dir` must get: its owner and group when this process is
 * root and `dir` belongs to another user; undefined when nothing is to change (not root, or a
 * directory of root's). Throws what stat(2) throws.
 */
export async function ownerFor(dir: string): Promise<Owner | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const st = await stat(dir);
  return st.uid === 0 ? undefined : { uid: st.uid, gid: st.gid };
}

/** Gives the open file `fh` the `owner` (ownerFor), when there is one. */
async function adopt(fh: FileHandle, owner: Owner | undefined): Promise<void> {
  if (!owner) return;
  try {
    await fh.chown(owner.uid, owner.gid);
  } catch (err) {
    if (!CANNOT_CHOWN.has((err as { code?: string }).code ?? '')) throw err;
  }
}

/**
 * Opens a new file exclusively (`O_CREAT|O_EXCL`: EEXIST when anything, a symlink too, is at
 * `path`) with `mode` and gives it the owner of its directory (ownerFor). The caller closes it.
 * Should the ownership change fail, the file is removed and the error thrown.
 */
export async function openNewOwned(path: string, flags: number, mode: number): Promise<FileHandle> {
  const owner = await ownerFor(dirname(path));
  const fh = await open(path, flags | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await adopt(fh, owner);
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw err;
  }
  return fh;
}

/**
 * Creates the empty file `path` (mode 0600, owner as openNewOwned) unless something is there
 * already, which is left as it is. For lock and probe files.
 */
export async function ensureOwnedFile(path: string): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await openNewOwned(path, constants.O_WRONLY, 0o600);
  } catch (err) {
    if ((err as { code?: string }).code === 'EEXIST') return;
    throw err;
  }
  await fh.close();
}

/**
 * Gives the file `path`, which this process has just created by other means than openNewOwned
 * (a copy: copyFile(2) or a reflink), the owner of its directory. Opened with O_NOFOLLOW and only
 * changed while it is a regular file of root's with a single link: a symlink or a hard link put in
 * its place meanwhile is left alone.
 */
export async function adoptCreatedFile(path: string): Promise<void> {
  const owner = await ownerFor(dirname(path));
  if (!owner) return;
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (st.isFile() && st.nlink === 1 && st.uid === 0) await adopt(fh, owner);
  } finally {
    await fh.close();
  }
}

/**
 * For core's writeFileAtomic and sidecars (NewFileOptions.onCreated): gives the file just created
 * exclusively at `path`, open as `fh`, the owner of its directory (ownerFor), so that a file
 * replaced by it keeps that owner.
 */
export async function ownNewFile(fh: FileHandle, path: string): Promise<void> {
  await adopt(fh, await ownerFor(dirname(path)));
}

/** NewFileOptions that keep the directory's owner (ownNewFile). */
export const OWNED: NewFileOptions = { onCreated: ownNewFile };

/**
 * Makes the directory `dir` (its parents as core's makeDirectories does, with its errors: the
 * `UNAVAILABLE` of a place taking no new directories, tagged `driver`). When this call makes `dir`
 * itself, it gets the owner of its parent (ownerFor); an existing `dir` is left as it is.
 * Durable when it resolves: the chain is made with makeDirectories' `durable` (the parent of every
 * level made is fsynced; an existing level's parent once per process), and `parent` is fsynced
 * after this call made `dir` in it, so the files later written durably in `dir` (sidecars,
 * bitmaps) do not vanish with their directory's entry in a power cut.
 */
export async function makeOwnedDirectory(dir: string, driver: string): Promise<void> {
  const parent = dirname(dir);
  await makeDirectories(parent, { driver, durable: true });
  const owner = await ownerFor(parent);
  try {
    await mkdir(dir, 0o777);
  } catch {
    // EEXIST: made already (perhaps by a creator still fsyncing it: makeDirectories fsyncs its
    // parent once per process); anything else: makeDirectories tries again and says it as it does.
    await makeDirectories(dir, { driver, durable: true });
    return;
  }
  if (owner) {
    // O_NOFOLLOW|O_DIRECTORY: should the new directory be swapped meanwhile, only a directory that
    // is itself in `parent` (whose owner may rename entries there anyway) can be reached.
    const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      await adopt(fh, owner);
    } finally {
      await fh.close();
    }
  }
  await syncDir(parent);
}
