import type { Catalog } from '../contracts/catalog.js';
import type { BackupRecord, VolumeFlowState } from '../contracts/records.js';
import type { Volume, VolumeDriver } from '../contracts/volume-driver.js';
import type { VolumeView } from './backup-manager.js';
import { judgeVolumeState, judgedVolumeState } from './backup-leftovers.js';
import { intentNamedBy, intentsByJob, intentVolumeStatus, judgeIntent } from './new-volume-intents.js';

/*
 * How the manager shows a volume (BackupManager.getVolume, BackupManager.listVolumes): the
 * driver's view with its judged flow state laid over it (judgedVolumeState), or, in none, the
 * status its restore's recorded new-volume intent gives it (intentVolumeStatus). One volume reads
 * its own state and intent; a listing reads every state and every intent once (a restored volume
 * keeps its job's id for good, so reading its intent per volume would cost the catalog reads per
 * restored volume), then judges each volume by the same rules, reading only the records of the
 * backups that the states and intents it finds name, each once.
 */

/** `volume` with `flow` (a judged flow state), or else the status `created` (an intent's), laid over it. */
function viewOf(volume: Volume, flow: VolumeFlowState | undefined, created: VolumeView['status'] | undefined): VolumeView {
  if (flow) return { ...volume, status: flow.status, previousStatus: flow.previousStatus };
  return created ? { ...volume, status: created } : volume;
}

/** The view of one volume: its flow state and, in none, its restore's intent, read for it. */
export async function volumeView(catalog: Pick<Catalog, 'getVolumeState' | 'getNewVolumeIntent' | 'getBackup'>, volume: Volume): Promise<VolumeView> {
  // A `restoring-backup` state whose restore's reader is gone is shown `error_restoring`, a
  // `backing-up` one whose backup's flow is over is not shown (judgedVolumeState).
  const flow = await judgedVolumeState(catalog, volume.id);
  // A restore's new volume before its flow state (the job waits for its lock or attach), or
  // left by a restore that died then: never `available` while it holds no backup yet.
  return viewOf(volume, flow, flow ? undefined : await intentVolumeStatus(catalog, volume));
}

/**
 * The views of `volumes.listVolumes()`, in its order, each as volumeView shows it, from one
 * listing of the catalog's flow states and one of its intents, read in that order after the
 * driver's list (as volumeView reads a volume's: a restore records its intent before it creates
 * its volume and lays its state, so a new volume listed is never shown `available`). Each
 * backup record a state or intent needs is read once per listing, however many name it.
 */
export async function listVolumeViews(catalog: Pick<Catalog, 'listVolumeStates' | 'listNewVolumeIntents' | 'getBackup'>, volumes: Pick<VolumeDriver, 'listVolumes'>): Promise<VolumeView[]> {
  const listed = await volumes.listVolumes();
  const states = await catalog.listVolumeStates();
  const intents = intentsByJob(await catalog.listNewVolumeIntents(), states);
  const stateOf = new Map(states.map((s) => [s.volumeId, s]));
  const records = new Map<string, Promise<BackupRecord>>();
  const backups: Pick<Catalog, 'getBackup'> = {
    getBackup: (backupId) => {
      let record = records.get(backupId);
      if (!record) records.set(backupId, (record = catalog.getBackup(backupId)));
      return record;
    },
  };
  return Promise.all(
    listed.map(async (volume) => {
      const flow = await judgeVolumeState(backups, stateOf.get(volume.id));
      const intent = flow ? undefined : intentNamedBy(intents, volume);
      return viewOf(volume, flow, intent && (await judgeIntent(backups, intent)).status);
    }),
  );
}
