import { toCairnError, type CairnError } from '@cairn/core';
import type { DaemonSession } from './daemon-session.js';
import { imageOpenError } from './image-lock.js';
import { outcomeUnknown } from './outcome.js';

/**
 * Takes qemu's lock on the image file at `path` in `session`'s daemon, without reading what the
 * file holds (a damaged qcow2 too), so that nobody else can open it: a `raw` node over the file,
 * a `copy-before-write` filter over that (target: a `null-co` node nothing reads), and a writable
 * NBD export of the filter that nobody connects to. The export takes `write`, and the filter does
 * not share `write` on the file (qemu's copy-before-write denies other writers of its source once
 * it has a user), so the file's lock denies both. While it is held, no other daemon can open the
 * image (a qcow2 open, or another instance's hold: qemu's lock failure), and `qemu-img` without
 * `-U` cannot either; it lasts while the daemon runs (its death releases it, like any lock of it).
 * Nothing ever writes through the export, so the filter never copies anything.
 *
 * Errors: `BUSY` when another process holds the image (another instance's hold included), or
 * this daemon has it open as a volume node; `NOT_FOUND` when the file does not exist (nothing to
 * hold); others as the daemon reports them. On failure nothing stays held: a step that got no
 * reply is undone by commands sent after it (qemu runs them after it).
 *
 * Returns the release: removes the export and the nodes ("no such export/node" counts as done).
 * When that fails it is queued on the session's DeferredWork under `volumeId`'s lock and retried
 * until it succeeds (the error is thrown), on the session's timer and before the volume's next
 * open or hold in this instance (Runtime.finishPending), which it would otherwise refuse.
 * Callers hold the volume's lock.
 */
export async function holdImage(session: DaemonSession, path: string, volumeId: string, driver: string): Promise<() => Promise<void>> {
  const node = session.nextName('hold');
  const sink = session.nextName('holdsink');
  const filter = session.nextName('holdcbw');
  const exportId = session.nextName('exp');
  const release = (): Promise<void> =>
    session.deferred.attempt(node, volumeId, async () => {
      await session.deleteExport(exportId); // idempotent; nothing to do after the daemon died
      for (const name of [filter, sink, node]) {
        if (!session.alive) return;
        try {
          await session.qmp.execute('blockdev-del', { 'node-name': name });
        } catch (err) {
          if ((err as CairnError).code !== 'NOT_FOUND') throw err;
        }
      }
    });
  const steps: Array<[string, Record<string, unknown>]> = [
    ['blockdev-add', { driver: 'raw', 'node-name': node, file: { driver: 'file', filename: path } }],
    ['blockdev-add', { driver: 'null-co', 'node-name': sink }],
    ['blockdev-add', { driver: 'copy-before-write', 'node-name': filter, file: node, target: sink }],
    ['block-export-add', { type: 'nbd', id: exportId, 'node-name': filter, name: exportId, writable: true }],
  ];
  for (const [i, [command, args]] of steps.entries()) {
    try {
      await (session.qmp.execute as (c: string, a: Record<string, unknown>) => Promise<unknown>)(command, args);
    } catch (err) {
      if (i > 0 || outcomeUnknown(err)) await release().catch(() => {});
      throw imageOpenError(toCairnError(err, driver, `hold ${path}`), path, driver);
    }
  }
  return release;
}
