import type { AttachMode, ByteRange, Extent, ExtentQuery } from '@cairn/core';
import { NbdBlockDevice, type NbdClient } from '@cairn/nbd';
import { CLUSTER } from './qemu-img.js';

/** Answers `changed` queries for one attachment (see queryChangedExtents). */
export type ChangedSource = (since: string, range: ByteRange) => Promise<Extent[]>;

/**
 * The NbdBlockDevice of an attachment, connected to the attachment's own export. `allocated`
 * extents come from `base:allocation` on that connection; `changed` ones from the driver, which
 * merges the checkpoint's bitmaps into a temporary one and reads it over a side export (a
 * connection's meta contexts are fixed at its handshake, and checkpoints come and go while a
 * device stays attached). Extent granularity is the bitmaps' and clusters' 64 KiB.
 */
export class Qcow2BlockDevice extends NbdBlockDevice {
  constructor(
    client: NbdClient,
    mode: AttachMode,
    driverName: string,
    private readonly changed: ChangedSource,
  ) {
    super(client, { mode, driverName, extentGranularity: CLUSTER, trackedBitmaps: [] });
  }

  protected override async _extents(query: ExtentQuery, range: ByteRange): Promise<Extent[]> {
    if (query.kind === 'changed') return range.length === 0 ? [] : this.changed(query.since, range);
    return super._extents(query, range);
  }
}
