import type { Catalog } from '../contracts/catalog.js';
import type { Volume, VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError, hasCode } from '../errors.js';
import { judgedIntent } from './new-volume-intents.js';
import { stateAsSettled } from './reader-leftovers.js';
import { judgedVolumeState } from './backup-leftovers.js';
import type { Section } from './volume-flow-states.js';

/** What a volume delete works with: the manager's catalog, driver and record sections. */
export interface DeleteVolumeDeps {
  catalog: Pick<Catalog, 'getVolumeState' | 'clearVolumeState' | 'getNewVolumeIntent' | 'getBackup'>;
  volumes: Pick<VolumeDriver, 'getVolume' | 'deleteVolume'>;
  /** The manager's section of one backup record (BackupClaims.exclusive), cancellable by the caller's signal. */
  section: Section;
}

/**
 * Cinder's volume delete: the contract is BackupManager.deleteVolume's.
 *
 * What the flow keeps of a volume, and what becomes of it:
 * - Its flow state. `backing-up` and `restoring-backup` refuse the delete (a flow works on the
 *   volume), but a `restoring-backup` one whose restore's reader is gone is the `error_restoring`
 *   recovery makes of it (stateAsSettled), and a `backing-up` one whose backup's flow is over is
 *   none (judgedVolumeState: the volume is deleted, the state, naming a volume gone, left to recovery); an `error_restoring` one is deleted with the volume, in the section of the backup it
 *   names (where a restore takes such a volume over: beginVolumeFlow), after the volume, so a
 *   crash in between never leaves a volume of unknown content looking `available`. A state left
 *   by such a crash names a volume that is gone: volume ids are never reused, and every flow
 *   reads the volume from the driver first (`NOT_FOUND`), so it blocks nothing.
 * - Its checkpoints (CBT): the driver's, deleted with the volume (a checkpoint belongs to a known
 *   volume only; deleting them first would lose them when the driver refuses the delete). Backup
 *   records naming them stay, as backups outlive their volume; a checkpoint id is only ever used
 *   for the next incremental of the same volume, which can no longer be taken.
 * - A new-volume intent whose job created the volume (new-volume-intents.ts). While that job
 *   may run (intentLive: the intent's reader not gone, also after the backup's claim is released,
 *   since the intent is the job's last write; an intent naming no reader, its backup `restoring`
 *   and live: mayBeWorkedOn; intentVolumeStatus, as getVolume shows it), the volume is its restore's even before the restore
 *   lays `restoring-backup` over it (it does so once it has the volume's lock and attachment):
 *   `CONFLICT` as for `restoring-backup`. Otherwise (its restore died or failed) the
 *   volume is deleted and the intent is left to
 *   recovery: it names a job, not a volume, and may be a running restore's; once its restore is
 *   over, recovery finds no volume to delete and deletes the intent. An intent refuses flows only
 *   on the volume its job created, which is gone.
 */
export async function deleteVolume(deps: DeleteVolumeDeps, volumeId: string): Promise<void> {
  const { catalog, volumes, section } = deps;
  // The driver first: an unknown volume is NOT_FOUND whatever the catalog holds.
  const volume = await volumes.getVolume(volumeId).catch((err: unknown) => (hasCode(err, 'NOT_FOUND') ? retriedDelete(volumes, volumeId, err) : Promise.reject(err)));
  if (!volume) return;
  // A `restoring-backup` state whose restore's reader is gone is `error_restoring`, a `backing-up`
  // one whose backup's flow is over is none (judgedVolumeState).
  const state = await judgedVolumeState(catalog, volume.id);
  if (state?.status === 'backing-up' || state?.status === 'restoring-backup') {
    throw new CairnError('CONFLICT', `volume ${volume.id} is ${state.status}`, { details: { volumeId: volume.id, volumeStatus: state.status } });
  }
  // In no flow: the driver's own refusals (BUSY while attached, with snapshots) keep a flow that
  // begins meanwhile safe; such a flow fails on the missing volume and settles its own state.
  if (!state) {
    await assertNoRunningRestore(catalog, volume);
    return volumes.deleteVolume(volume.id);
  }
  await section(state.backupId, async () => {
    const now = stateAsSettled(await catalog.getVolumeState(volume.id));
    if (now?.status !== state.status || now.backupId !== state.backupId || now.since !== state.since) {
      throw new CairnError('CONFLICT', `volume ${volume.id} was taken by another flow meanwhile (now ${now?.status ?? 'in none'}): try again`, {
        details: { volumeId: volume.id, volumeStatus: now?.status },
      });
    }
    await volumes.deleteVolume(volume.id);
    await catalog.clearVolumeState(volume.id);
  });
}

/**
 * The delete of `volumeId`, which getVolume does not know (`notFound`, its error): the driver's
 * deleteVolume of it, once. A driver whose deletion of that id was killed midway finishes it
 * there, or has finished it in this process (the file driver's listings do), and succeeds: the
 * retried delete is done (resolves to undefined). A driver that knows nothing of the id is
 * `NOT_FOUND` (the VolumeDriver contract; conformance checks it), and `notFound` is thrown, as
 * before; any other error of the driver's (`BUSY`: that deletion is under way elsewhere) is thrown.
 * No flow state is judged: a volume getVolume does not know is in none (every flow reads the
 * volume from the driver first), and a state naming it blocks nothing.
 */
async function retriedDelete(volumes: Pick<VolumeDriver, 'deleteVolume'>, volumeId: string, notFound: unknown): Promise<undefined> {
  await volumes.deleteVolume(volumeId).catch((err: unknown) => Promise.reject(hasCode(err, 'NOT_FOUND') ? notFound : err));
  return undefined;
}

/**
 * `CONFLICT` (`volumeStatus` `restoring-backup`) when `volume` is the new volume of a restore still
 * running, as getVolume shows it and recovery judges it (intentVolumeStatus): the intent of the job
 * that created it is recorded, and that intent's reader is not gone (also after the job released
 * its claim on the backup: a restore deletes its intent last), or, for an intent naming no reader,
 * that job's backup is `restoring` by a live owner.
 * A volume whose restore's reader is gone is `error_restoring` whatever else reads the backup, and
 * passes (recovery deletes it too). Also what a metadata change refuses (volume-metadata.ts).
 */
export async function assertNoRunningRestore(catalog: Pick<Catalog, 'getNewVolumeIntent' | 'getVolumeState' | 'getBackup'>, volume: Volume): Promise<void> {
  const volumeId = volume.id;
  const judged = await judgedIntent(catalog, volume);
  if (judged?.status !== 'restoring-backup') return;
  throw new CairnError('CONFLICT', `volume ${volumeId} is restoring-backup (a restore of backup ${judged.intent.backupId} is creating it)`, {
    details: { volumeId, volumeStatus: 'restoring-backup' },
  });
}
