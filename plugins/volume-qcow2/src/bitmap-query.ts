import { CairnError, type ByteRange, type Extent } from '@cairn/core';
import { DIRTY_BITMAP_PREFIX, STATE_DIRTY, type NbdClient } from '@cairn/nbd';
import { actions } from '@cairn/qmp';
import type { DaemonSession } from './daemon-session.js';
import { outcomeUnknown } from './outcome.js';
import { CLUSTER } from './qemu-img.js';

export interface ChangedQuery {
  /** Node holding the source bitmaps (the volume's or snapshot copy's format node). */
  bitmapNode: string;
  /** Node to export for the query (the same node, or a view's overlay above it). */
  exportNode: string;
  /** Bitmaps whose union is the answer; never empty. */
  sources: string[];
  range: ByteRange;
  /** Name used in errors. */
  driver: string;
}

/**
 * Answers "which ranges changed" from dirty bitmaps without ever exporting a checkpoint's own
 * bitmap (an exported bitmap is busy and could not be disabled, merged or removed):
 * one QMP `transaction` adds a temporary disabled bitmap and merges the sources into it (a
 * consistent union at one instant), a short-lived read-only NBD export offers it as
 * `qemu:dirty-bitmap:<temp>`, NBD_CMD_BLOCK_STATUS reads it, and the export and the temporary
 * bitmap are removed. A source bitmap that is missing or inconsistent gives `NOT_FOUND` (callers
 * then read everything), never a partial answer. The temporary bitmap is not persistent, so even
 * one left behind never reaches the image nor the checkpoint chain.
 */
export async function queryChangedExtents(session: DaemonSession, q: ChangedQuery): Promise<Extent[]> {
  if (q.sources.length === 0) throw new CairnError('INTERNAL', 'a changed-extents query needs at least one bitmap', { driver: q.driver });
  const temp = session.nextName('cairn-q');
  try {
    await session.qmp.transaction([
      actions.bitmapAdd({ node: q.bitmapNode, name: temp, disabled: true, granularity: CLUSTER }),
      actions.bitmapMerge({ node: q.bitmapNode, target: temp, bitmaps: q.sources }),
    ]);
  } catch (err) {
    // No reply in time: qemu may still add the bitmap; this remove is sent after, so it runs after.
    if (outcomeUnknown(err)) void removeTemp(session, q.bitmapNode, temp);
    const code = (err as CairnError).code;
    if (code === 'NOT_FOUND' || code === 'CORRUPT') {
      throw new CairnError('NOT_FOUND', `a dirty bitmap of the checkpoint chain is missing or inconsistent`, { driver: q.driver, cause: err });
    }
    throw err;
  }
  let exportId: string | undefined;
  let client: NbdClient | undefined;
  try {
    exportId = await session.addExport(q.exportNode, false, [temp]);
    const context = DIRTY_BITMAP_PREFIX + temp;
    client = await session.connectNbd(exportId, [context]);
    const map = await client.mapExtents(context, q.range.offset, q.range.length);
    return map.filter((e) => (e.flags & STATE_DIRTY) !== 0).map(({ offset, length }) => ({ offset, length }));
  } finally {
    await client?.disconnect().catch(() => {});
    if (exportId) await session.deleteExport(exportId).catch(() => {});
    await removeTemp(session, q.bitmapNode, temp);
  }
}

/** Removes a temporary bitmap; never throws. */
async function removeTemp(session: DaemonSession, node: string, name: string): Promise<void> {
  if (session.alive) await session.qmp.execute('block-dirty-bitmap-remove', { node, name }).catch(() => {});
}
