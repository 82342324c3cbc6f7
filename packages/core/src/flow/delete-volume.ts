import type { Catalog } from '../contracts/catalog.js';
import type { VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError } from '../errors.js';
import type { Section } from './volume-flow-states.js';

/** What a volume delete works with: the manager's catalog, driver and record sections. */
export interface DeleteVolumeDeps {
  catalog: Pick<Catalog, 'getVolumeState' | 'clearVolumeState'>;
  volumes: Pick<VolumeDriver, 'getVolume' | 'deleteVolume'>;
  /** The manager's section of one backup record (BackupClaims.exclusive), cancellable by the caller's signal. */
  section: Section;
}

/**
 * Cinder's volume delete: the contract is BackupManager.deleteVolume's.
 *
 * What the flow keeps of a volume, and what becomes of it:
 * - Its flow state. `backing-up` and `restoring-backup` refuse the delete (a flow works on the
 *   volume); an `error_restoring` one is deleted with the volume, in the section of the backup it
 *   names (where a restore takes such a volume over: beginVolumeFlow), after the volume, so a
 *   crash in between never leaves a volume of unknown content looking `available`. A state left
 *   by such a crash names a volume that is gone: volume ids are never reused, and every flow
 *   reads the volume from the driver first (`NOT_FOUND`), so it blocks nothing.
 * - Its checkpoints (CBT): the driver's, deleted with the volume (a checkpoint belongs to a known
 *   volume only; deleting them first would lose them when the driver refuses the delete). Backup
 *   records naming them stay, as backups outlive their volume; a checkpoint id is only ever used
 *   for the next incremental of the same volume, which can no longer be taken.
 * - A new-volume intent whose job created the volume (new-volume-intents.ts) is left to
 *   recovery: it names a job, not a volume, and may be a running restore's; once its restore is
 *   over, recovery finds no volume to delete and deletes the intent. An intent refuses flows only
 *   on the volume its job created, which is gone.
 */
export async function deleteVolume(deps: DeleteVolumeDeps, volumeId: string): Promise<void> {
  const { catalog, volumes, section } = deps;
  // The driver first: an unknown volume is NOT_FOUND whatever the catalog holds.
  const volume = await volumes.getVolume(volumeId);
  const state = await catalog.getVolumeState(volume.id);
  if (state?.status === 'backing-up' || state?.status === 'restoring-backup') {
    throw new CairnError('CONFLICT', `volume ${volume.id} is ${state.status}`, { details: { volumeId: volume.id, volumeStatus: state.status } });
  }
  // In no flow: the driver's own refusals (BUSY while attached, with snapshots) keep a flow that
  // begins meanwhile safe; such a flow fails on the missing volume and settles its own state.
  if (!state) return volumes.deleteVolume(volume.id);
  await section(state.backupId, async () => {
    const now = await catalog.getVolumeState(volume.id);
    if (now?.status !== state.status || now.backupId !== state.backupId || now.since !== state.since) {
      throw new CairnError('CONFLICT', `volume ${volume.id} was taken by another flow meanwhile (now ${now?.status ?? 'in none'}): try again`, {
        details: { volumeId: volume.id, volumeStatus: now?.status },
      });
    }
    await volumes.deleteVolume(volume.id);
    await catalog.clearVolumeState(volume.id);
  });
}
