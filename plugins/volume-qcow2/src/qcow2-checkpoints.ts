import { toCairnError, type ChangedBlockTracking, type Checkpoint } from '@cairn/core';
import { addCheckpoint, removeCheckpoint } from './checkpoint-chain.js';
import type { RecordStore } from './record-store.js';
import { toCheckpoint } from './records.js';
import type { Runtime } from './runtime.js';

/**
 * Changed-block tracking by persistent qcow2 dirty bitmaps, one per checkpoint (see
 * checkpoint-chain.ts). The volume's node is opened in the daemon for the call when it is not
 * attached, and closed again (which writes the bitmaps into the image). Every error is a
 * CairnError tagged with the driver's name (file system errors mapped by `toCairnError`:
 * ENOSPC → UNAVAILABLE, …).
 */
export class Qcow2Checkpoints implements ChangedBlockTracking {
  constructor(
    private readonly store: RecordStore,
    private readonly runtime: Runtime,
    private readonly driver: string,
  ) {}

  /** `NOT_FOUND` for an unknown volume. Not idempotent. */
  async createCheckpoint(volumeId: string): Promise<Checkpoint> {
    return this.guard('createCheckpoint', () =>
      this.runtime.locks.run(volumeId, async () => {
        await this.store.volume(volumeId);
        const { session, node } = await this.runtime.openVolume(volumeId);
        try {
          return toCheckpoint(volumeId, await addCheckpoint(session, node, this.store, volumeId));
        } finally {
          await this.runtime.releaseVolume(session, volumeId);
        }
      }),
    );
  }

  /** Oldest first, including checkpoints whose bitmaps were lost. `NOT_FOUND` for an unknown volume. */
  async listCheckpoints(volumeId: string): Promise<Checkpoint[]> {
    return this.guard('listCheckpoints', async () => (await this.store.volume(volumeId)).checkpoints.map((c) => toCheckpoint(volumeId, c)));
  }

  /** Idempotent: an unknown checkpoint of a known volume is not an error. `NOT_FOUND` for an unknown volume. */
  async deleteCheckpoint(volumeId: string, checkpointId: string): Promise<void> {
    await this.guard('deleteCheckpoint', () =>
      this.runtime.locks.run(volumeId, async () => {
        const record = await this.store.volume(volumeId);
        if (!record.checkpoints.some((c) => c.id === checkpointId)) return;
        const { session, node } = await this.runtime.openVolume(volumeId);
        try {
          await removeCheckpoint(session, node, this.store, volumeId, checkpointId);
        } finally {
          await this.runtime.releaseVolume(session, volumeId);
        }
      }),
    );
  }

  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toCairnError(err, this.driver, what);
    }
  }
}
