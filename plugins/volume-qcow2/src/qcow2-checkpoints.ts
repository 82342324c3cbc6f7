import { CairnError, hasCode, toCairnError, withRetries, type ChangedBlockTracking, type Checkpoint } from '@cairn/core';
import { addCheckpoint, removeCheckpoint } from './checkpoint-chain.js';
import type { DaemonSession } from './daemon-session.js';
import { qcow2ImageFacts } from './image-header.js';
import type { RecordStore } from './record-store.js';
import { toCheckpoint } from './records.js';
import type { Runtime } from './runtime.js';

/**
 * Delays before the open of a volume's image for a checkpoint call is tried again after `BUSY`
 * (another process holds the image's lock). Another driver instance holds a volume's image for
 * milliseconds right after its daemon closed it (the hold under which it saves the image's stamp,
 * Runtime.stampClosed), so a checkpoint call made right after its detach would fail for that
 * alone; waiting about a second, as core does for a flow's attach (ATTACH_RETRY_MS), lets such a
 * hold go. A longer use of the image elsewhere (an attachment) is still `BUSY`.
 */
export const CHECKPOINT_OPEN_RETRY_MS: readonly number[] = [50, 200, 800];

/**
 * Changed-block tracking by persistent qcow2 dirty bitmaps, one per checkpoint (see
 * checkpoint-chain.ts). The volume's node is opened in the daemon for the call when it is not
 * attached, and closed again (which writes the bitmaps into the image; a close that fails stays
 * queued and does not fail the call, whose change is committed). Every error is a
 * CairnError tagged with the driver's name (file system errors mapped by `toCairnError`:
 * ENOSPC → UNAVAILABLE, …).
 */
export class Qcow2Checkpoints implements ChangedBlockTracking {
  constructor(
    private readonly store: RecordStore,
    private readonly runtime: Runtime,
    private readonly driver: string,
  ) {}

  /**
   * `NOT_FOUND` for an unknown volume. `NOT_SUPPORTED`, before anything is opened or changed, for
   * a volume whose image is qcow2 version 2 (made outside the driver, `compat=0.10`): it cannot
   * hold the persistent bitmap, and the driver does not upgrade the image itself. Such a volume
   * says so (`capabilities.changedBlockTracking: false` on getVolume/listVolumes), and core's
   * flow then takes no checkpoint: its backups read the whole volume. Not idempotent.
   */
  async createCheckpoint(volumeId: string): Promise<Checkpoint> {
    return this.guard('createCheckpoint', () =>
      this.runtime.locks.run(volumeId, async () => {
        await this.store.volume(volumeId);
        const image = this.store.layout.image('volume', volumeId);
        if ((await qcow2ImageFacts(image)).holdsBitmaps === false) {
          throw new CairnError('NOT_SUPPORTED', `volume ${volumeId} has no changed-block tracking: its image ${image} is qcow2 version 2 (compat=0.10), which cannot hold the persistent dirty bitmap of a checkpoint (\`qemu-img amend -o compat=1.1\` upgrades it while nothing has it open)`, {
            driver: this.driver,
            details: { volumeId, reason: 'qcow2-v2' },
          });
        }
        return this.withVolume(volumeId, async (session, node) => toCheckpoint(volumeId, await addCheckpoint(session, node, this.store, volumeId)));
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
        await this.withVolume(volumeId, (session, node) => removeCheckpoint(session, node, this.store, volumeId, checkpointId));
      }),
    );
  }

  /**
   * Runs `fn` on the volume's node, opened for it (Runtime.openVolume; an open refused with `BUSY`,
   * which changes nothing, is tried again after each of CHECKPOINT_OPEN_RETRY_MS, still under the
   * volume's lock), then drops that reference.
   * The result is `fn`'s alone: a close that fails after it (no reply, or refused) does not fail
   * the call — `fn`'s change is committed by then — and stays queued on the node (releaseNode),
   * retried until it succeeds, and reported by the node's next use while it fails. Callers hold
   * the volume's lock.
   */
  private async withVolume<T>(volumeId: string, fn: (session: DaemonSession, node: string) => Promise<T>): Promise<T> {
    const { session, node } = await this.openWhenFree(volumeId);
    try {
      return await fn(session, node);
    } finally {
      await this.runtime.releaseVolume(session, volumeId).catch(() => {}); // queued on failure
    }
  }

  private openWhenFree(volumeId: string): Promise<{ session: DaemonSession; node: string }> {
    return withRetries(() => this.runtime.openVolume(volumeId), CHECKPOINT_OPEN_RETRY_MS, (err) => hasCode(err, 'BUSY'));
  }

  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toCairnError(err, this.driver, what);
    }
  }
}
