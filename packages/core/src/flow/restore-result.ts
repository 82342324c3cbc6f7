import type { BackupRecord } from '../contracts/records.js';
import type { Volume } from '../contracts/volume-driver.js';
import { toCairnError, type CairnError } from '../errors.js';
import type { BackupManager, VolumeView } from './backup-manager.js';

/** What a restore that succeeded resolves with (BackupManager.restore, readBackRestored). */
export interface RestoreResult {
  /** The backup's record as the restore's job ended it. */
  backup: BackupRecord;
  /**
   * The volume read back after the restore, as BackupManager.getVolume shows it (a flow state
   * begun on it since laid over). When it could not be read back (`volumeError`): the volume as
   * the restore began with it, whose `status` is no longer known.
   */
  volume: VolumeView;
  /**
   * Set only when the volume could not be read back after the restore: why (`NOT_FOUND` when it
   * was deleted just then; a driver's failure as its CairnError, any other error as toCairnError
   * maps it). The restore succeeded all the same.
   */
  volumeError?: CairnError;
  /**
   * Set only for a restore into an existing volume whose driver cannot replace a volume's metadata
   * (no `capabilities.volumeMetadata`): the volume kept its own metadata, where a driver with the
   * capability gives it the backup's (volume-metadata.ts: restoredVolumeMetadata).
   */
  metadataKept?: true;
}

/**
 * The result of a restore that succeeded: `backup` as its job ended (Job.done), `volume` the volume
 * it wrote as startRestore returned it, read back now through `manager.getVolume`, and
 * `metadataKept` as startRestore returned it (RestoreResult.metadataKept). The one place a
 * restore's read-back is made and judged: never rejects, since the restore has succeeded whatever
 * the read does (see RestoreResult.volumeError).
 */
export async function readBackRestored(manager: Pick<BackupManager, 'getVolume'>, backup: BackupRecord, volume: Volume, metadataKept?: boolean): Promise<RestoreResult> {
  const kept = metadataKept ? { metadataKept: true as const } : {};
  try {
    return { backup, volume: await manager.getVolume(volume.id), ...kept };
  } catch (err) {
    return { backup, volume, volumeError: toCairnError(err), ...kept };
  }
}
