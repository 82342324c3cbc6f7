import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Replaces `path` with `data` atomically and durably: a temp file `.<name>.<random>.tmp` in the
 * same directory is written and fsynced, renamed over `path`, and the directory is fsynced. A
 * reader sees the old or the new content, never a mix; after return the new content survives a
 * power cut. On failure the temp file is removed. Idempotent.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dirname(path));
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
