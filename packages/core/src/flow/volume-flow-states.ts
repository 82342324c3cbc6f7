import type { Catalog } from '../contracts/catalog.js';
import type { VolumeFlowStatus } from '../contracts/records.js';
import type { Volume } from '../contracts/volume-driver.js';
import { CairnError, isAlreadyExists } from '../errors.js';
import { nowIso } from '../util/clock.js';

/*
 * The flow states the manager lays over volumes (`backing-up`, `restoring-backup`,
 * `error_restoring`), kept in the catalog so that every process sharing it sees them.
 */

/**
 * `CONFLICT` when the volume is in a flow. `error_restoring` (a partial restore) may be restored
 * over, never backed up (as in Cinder): that refusal carries `details.volumeStatus`.
 */
export async function assertNoFlow(catalog: Pick<Catalog, 'getVolumeState'>, volumeId: string, next: 'backup' | 'restore'): Promise<void> {
  const flow = await catalog.getVolumeState(volumeId);
  if (!flow || (flow.status === 'error_restoring' && next === 'restore')) return;
  if (flow.status === 'error_restoring') {
    throw new CairnError('CONFLICT', `volume ${volumeId} is error_restoring (a restore of backup ${flow.backupId} failed part-way); restore it again before backing it up`, {
      details: { volumeId, volumeStatus: flow.status },
    });
  }
  throw new CairnError('CONFLICT', `volume ${volumeId} is ${flow.status}`);
}

/**
 * Lays `status` over a volume that assertNoFlow let through; `CONFLICT` when a flow (of another
 * process, begun since) has it. A volume in no flow is taken with an only-if-absent write, so of
 * flows that processes sharing the catalog begin on it at once, one proceeds and the others are
 * refused. A restore replaces `error_restoring` with a plain write, keeping its previous status:
 * it holds the volume's read-write attachment by then, which VolumeDriver.attach grants to one
 * holder across processes, and no other flow begins on an `error_restoring` volume without it
 * (a backup is refused, a restore attaches first). A flow-override driver, which core does not
 * attach, must keep two restores of one volume apart itself.
 */
export async function beginVolumeFlow(catalog: Catalog, volume: Volume, status: VolumeFlowStatus, backupId: string): Promise<void> {
  const existing = await catalog.getVolumeState(volume.id);
  const state = { volumeId: volume.id, status, backupId, since: nowIso() };
  if (existing?.status === 'error_restoring' && status === 'restoring-backup') {
    await catalog.putVolumeState({ ...state, previousStatus: existing.previousStatus });
    return;
  }
  if (existing) throw new CairnError('CONFLICT', `volume ${volume.id} is ${existing.status}`, { details: { volumeId: volume.id, volumeStatus: existing.status } });
  try {
    await catalog.putVolumeState({ ...state, previousStatus: volume.status }, { ifAbsent: true });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    throw new CairnError('CONFLICT', `volume ${volume.id} was taken by another flow meanwhile`, { cause: err, details: { volumeId: volume.id } });
  }
}

export async function markErrorRestoring(catalog: Catalog, volumeId: string, backupId: string): Promise<void> {
  const existing = await catalog.getVolumeState(volumeId);
  await catalog.putVolumeState({
    volumeId,
    status: 'error_restoring',
    previousStatus: existing?.previousStatus ?? 'available',
    backupId,
    since: nowIso(),
  });
}

/*
 * A restore to a new volume owns the volume it creates, so nothing may leave that volume behind
 * unaccounted: not a failed job that cannot delete it, not a process that dies at any point. As
 * Cinder's volume row exists before its backend creates the volume, the restore records its intent
 * in the catalog before it creates anything: a flow state under a key that is no volume's id
 * (`newVolumeIntentKey(jobId)`), naming the backup, written once the backup is claimed (its record
 * `restoring`, owned by the job's process). The volume is then created with the job's id in its
 * metadata (`RESTORE_JOB_METADATA_KEY`), so that whoever finds the intent finds the volume too,
 * even when the process died before it wrote anything naming the volume's id.
 *
 * The intent stays until the job has settled the volume: cleared when the restore has committed
 * (the volume is the caller's from then on), or once the volume is deleted after a failure. An
 * intent whose backup is no longer in a live flow (recovery.ts: the restore that wrote it ended or
 * died) marks a volume to delete: recover() deletes every volume whose metadata names its job, the
 * flow states of that restore's volumes that are gone, and then the intent.
 */

/** Volume metadata naming the restore job that created the volume (kept on the restored volume). */
export const RESTORE_JOB_METADATA_KEY = 'cairn.restore-job';

/** Prefix of the flow-state keys of new-volume intents; no driver's volume id starts with it. */
export const NEW_VOLUME_INTENT_PREFIX = 'cairn-new-volume-';

/** The key of the intent of restore job `jobId` to create a volume. */
export function newVolumeIntentKey(jobId: string): string {
  return `${NEW_VOLUME_INTENT_PREFIX}${jobId}`;
}

/** The restore job whose intent `key` is, or undefined when `key` is a volume's id. */
export function intentJobId(key: string): string | undefined {
  return key.startsWith(NEW_VOLUME_INTENT_PREFIX) ? key.slice(NEW_VOLUME_INTENT_PREFIX.length) : undefined;
}

/**
 * Records the intent of restore job `jobId` to create a volume for `backupId` (only if absent:
 * job ids are unique). The caller has claimed the backup, so recovery judges the intent live
 * for as long as the claim is.
 */
export async function recordNewVolumeIntent(catalog: Catalog, jobId: string, backupId: string): Promise<string> {
  const key = newVolumeIntentKey(jobId);
  await catalog.putVolumeState({ volumeId: key, status: 'restoring-backup', previousStatus: 'creating', backupId, since: nowIso() }, { ifAbsent: true });
  return key;
}

/**
 * `CONFLICT` (details `{ volumeId, volumeStatus: 'error_restoring', backupId }`) when `volume` is
 * one that a failed restore to a new volume could not delete: its metadata names a restore job
 * whose intent is still recorded. recover() deletes such a volume; a backup or a restore of it
 * meanwhile would make a volume that recovery deletes hold data someone wants. A volume restored
 * completely keeps the job's id, but its intent is gone.
 */
export async function assertNotLeftByRestore(catalog: Pick<Catalog, 'getVolumeState'>, volume: Pick<Volume, 'id' | 'metadata'>): Promise<void> {
  const jobId = volume.metadata?.[RESTORE_JOB_METADATA_KEY];
  if (!jobId) return;
  const intent = await catalog.getVolumeState(newVolumeIntentKey(jobId));
  if (!intent) return;
  throw new CairnError('CONFLICT', `volume ${volume.id} is being created by a restore of backup ${intent.backupId} (one that failed left it error_restoring: recovery deletes it)`, {
    details: { volumeId: volume.id, volumeStatus: 'error_restoring', backupId: intent.backupId },
  });
}
