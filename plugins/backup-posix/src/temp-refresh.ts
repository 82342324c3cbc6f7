/**
 * How a live writer's temporary file stays distinguishable from a dead writer's leftover.
 *
 * Contract: sweepTemp judges a temporary file abandoned by its mtime alone. Every writer therefore
 * sets its temporary file's mtime to the present at least every {@link TEMP_REFRESH_MS} for as
 * long as it holds the file open, however long it waits between writes (a pack streamed from a
 * slow source, an fsync that stalls), and stops when it closes or removes it. A temporary file
 * whose mtime is older than a few refresh intervals, plus the clock skew between the hosts sharing
 * the directory, has no live writer: it crashed, was killed, or its host died. sweepTemp with a
 * shorter age may remove a live writer's file; that writer's publish then fails with
 * `UNAVAILABLE` and publishes nothing.
 *
 * Why not a liveness check of the writer's process: temporary names carry a pid but no host, and
 * pids are neither comparable across the hosts of an NFS mount nor stable across containers
 * (every container's first process is pid 1); an mtime is visible to every host alike.
 */
import type { FileHandle } from 'node:fs/promises';

/** How often a writer refreshes its temporary file's mtime: well below the least sweep age (the GC uses at least 15 minutes). */
export const TEMP_REFRESH_MS = 60_000;

/**
 * Refreshes the mtime of the temporary file open as `current()` (read at each refresh: a writer
 * may reopen its file) every TEMP_REFRESH_MS until the returned function is called; call it before
 * closing the file. A failed refresh is ignored: the next one tries again, and a file that is gone
 * fails its writer's next step anyway. The timer does not keep the process alive.
 */
export function keepFresh(current: () => FileHandle | undefined): () => void {
  const timer = setInterval(() => {
    const now = new Date();
    current()
      ?.utimes(now, now)
      .catch(() => undefined);
  }, TEMP_REFRESH_MS);
  timer.unref();
  return () => clearInterval(timer);
}
