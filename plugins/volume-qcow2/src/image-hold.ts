import { toCairnError, type CairnError } from '@cairn/core';
import type { DaemonSession } from './daemon-session.js';
import { imageOpenError } from './image-lock.js';
import { outcomeUnknown } from './outcome.js';

/**
 * Takes qemu's lock on the image file at `path` in `session`'s daemon, without reading what the
 * file holds (a damaged qcow2 too): a `raw` node over the file and a writable NBD export of it
 * that nobody connects to, whose `write` permission takes the file's lock. While it is held no
 * other daemon can open the image (qemu's lock failure) and `qemu-img` without `-U` cannot
 * either; it lasts while the daemon runs (its death releases it, like any lock of it).
 *
 * Errors: `BUSY` when another process holds the image (or this daemon has it open as a volume
 * node); `NOT_FOUND` when the file does not exist (nothing to hold); others as the daemon reports
 * them. On failure nothing stays held: a step that got no reply is undone by commands sent after
 * it (qemu runs them after it).
 *
 * Returns the release: removes the export and the node ("no such export/node" counts as done).
 * When that fails it is queued on the session's DeferredWork under `volumeId`'s lock and retried
 * until it succeeds (the error is thrown). Callers hold the volume's lock.
 */
export async function holdImage(session: DaemonSession, path: string, volumeId: string, driver: string): Promise<() => Promise<void>> {
  const node = session.nextName('hold');
  const exportId = session.nextName('exp');
  const release = (): Promise<void> =>
    session.deferred.attempt(node, volumeId, async () => {
      await session.deleteExport(exportId); // idempotent; nothing to do after the daemon died
      if (!session.alive) return;
      try {
        await session.qmp.execute('blockdev-del', { 'node-name': node });
      } catch (err) {
        if ((err as CairnError).code !== 'NOT_FOUND') throw err;
      }
    });
  try {
    await session.qmp.execute('blockdev-add', { driver: 'raw', 'node-name': node, file: { driver: 'file', filename: path } });
  } catch (err) {
    if (outcomeUnknown(err)) await release().catch(() => {});
    throw imageOpenError(toCairnError(err, driver, `hold ${path}`), path, driver);
  }
  try {
    await session.qmp.execute('block-export-add', { type: 'nbd', id: exportId, 'node-name': node, name: exportId, writable: true });
  } catch (err) {
    await release().catch(() => {});
    throw imageOpenError(toCairnError(err, driver, `hold ${path}`), path, driver);
  }
  return release;
}
