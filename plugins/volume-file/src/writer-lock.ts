import { ensureOwnedFile } from './dir-owner.js';
import { lockWithin, tryLock } from './file-lock.js';
import { namingFullDisk } from './no-space.js';

/**
 * How long a read-write attach waits for status probes to let go of the writer lock, in ms. Only
 * probes take it besides the writer (see below), each for an instant; reaching this means one is stuck.
 */
const WRITER_LOCK_WAIT_MS = 5_000;

/**
 * The writer lock of a volume: a flock(2) on its own file (Layout.writerLock), held exclusive by
 * the read-write attachment for as long as its sidecar may carry its writer mark — taken before
 * the mark is written, dropped after a clean detach cleared it, or when the process dies.
 *
 * It tells a status probe whether a marked writer is alive without touching the image's lock,
 * which decides who may write the image: a probe on the image lock made a concurrent attach(rw)
 * fail with `BUSY` although nobody used the volume. The writer lock excludes nothing itself (the
 * image's exclusive lock, taken first, already keeps any second writer out), so its only other
 * takers are probes, for an instant each, and the writer can wait them out.
 */

/**
 * Takes the writer lock at `path` (created when missing, with its directory's owner: dir-owner.ts) exclusively, waiting while status probes
 * hold it; resolves to its release (idempotent). Call holding the image's exclusive lock.
 * `BUSY` when it stays held for WRITER_LOCK_WAIT_MS. `UNAVAILABLE` naming the file when a full file
 * system (no inode left, a quota) refuses to create it (no-space.ts).
 */
export async function holdWriterLock(path: string, driver: string): Promise<() => Promise<void>> {
  await namingFullDisk(path, 'creating writer lock file', driver, () => ensureOwnedFile(path));
  const lock = await lockWithin(path, 'exclusive', WRITER_LOCK_WAIT_MS, driver);
  return () => lock.release();
}

/**
 * Whether a writer holds the writer lock at `path` now: a shared lock tried without waiting and
 * dropped at once. A missing file means no writer ever attached the volume read-write with it (or
 * the volume was deleted meanwhile); the probe never creates it (tryLock).
 */
export async function writerAlive(path: string, driver: string): Promise<boolean> {
  let lock;
  try {
    lock = await tryLock(path, 'shared', driver);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT') return false;
    throw err;
  }
  if (!lock) return true;
  await lock.release();
  return false;
}
