import type { Catalog } from '../contracts/catalog.js';
import type { BackupReader, NewVolumeIntent, VolumeFlowState } from '../contracts/records.js';
import type { Volume, VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError, unlessNotFound } from '../errors.js';
import { nowIso } from '../util/clock.js';
import { mayBeWorkedOn } from './live-records.js';
import { readerGone } from './reader-leftovers.js';
import type { RecoveryReport } from './recovery.js';

/*
 * A restore to a new volume owns the volume it creates, so nothing may leave that volume behind
 * unaccounted: not a failed job that cannot delete it, not a process that dies at any point. As
 * Cinder's volume row exists before its backend creates the volume, the restore records its intent
 * in the catalog (NewVolumeIntent, keyed by the job's id) before it creates anything, once the
 * backup is claimed (its record `restoring`, owned by the job's process). The volume is then
 * created with the job's id in its metadata (`RESTORE_JOB_METADATA_KEY`), so that whoever finds
 * the intent finds the volume too, even when the process died before it wrote anything naming the
 * volume's id.
 *
 * The intent stays until the job has settled the volume: deleted as the job's last write once
 * the restore has committed, after the volume's flow state is cleared and the backup's claim
 * released (the volume is the caller's from then on: the job reports done only after), or once
 * the volume is deleted after a failure. An intent whose restore ended or died (its reader gone;
 * for one naming no reader, its backup no longer in a live flow) marks a volume to delete:
 * recoverNewVolumeIntents deletes every volume whose metadata names its job, the flow states of
 * that restore's volumes that are gone, and then the intent. So a process that dies at any step
 * of a restore to a new volume before it is done leaves no volume behind (the caller was not told
 * of one: a retry makes a single volume), and none the caller was told of is deleted.
 *
 * Cairn before the catalog had intents kept them as volume flow states under a key that names no
 * volume (LEGACY_INTENT_PREFIX + job id, status `restoring-backup`). Such an intent is found and
 * settled here as the catalog's own are; nothing writes one any more.
 */

/** Volume metadata naming the restore job that created the volume (kept on the restored volume). */
export const RESTORE_JOB_METADATA_KEY = 'cairn.restore-job';

/** Prefix of the volume flow-state keys that held intents before the catalog had them; no driver's volume id starts with it. */
export const LEGACY_INTENT_PREFIX = 'cairn-new-volume-';

/** The restore job whose legacy intent the volume flow-state key `key` is, or undefined when `key` is a volume's id. */
export function legacyIntentJobId(key: string): string | undefined {
  return key.startsWith(LEGACY_INTENT_PREFIX) ? key.slice(LEGACY_INTENT_PREFIX.length) : undefined;
}

/** An intent as found: the catalog's own, or one kept as a volume flow state (`legacy`). */
interface FoundIntent extends NewVolumeIntent {
  legacy: boolean;
}

/**
 * Records the intent of restore job `jobId` to create a volume for `backupId` (only if absent:
 * job ids are unique, so `ALREADY_EXISTS` never comes from another job), naming the restore's
 * `reader` (NewVolumeIntent.reader). The caller has claimed the backup, so recovery judges the
 * intent live for as long as the claim is and that reader may be alive.
 */
export async function recordNewVolumeIntent(catalog: Pick<Catalog, 'putNewVolumeIntent'>, jobId: string, backupId: string, reader?: BackupReader): Promise<void> {
  await catalog.putNewVolumeIntent({ jobId, backupId, since: nowIso(), ...(reader ? { reader } : {}) }, { ifAbsent: true });
}

/** The intent of restore job `jobId`, the catalog's or a legacy one, or undefined. */
async function findIntent(catalog: Pick<Catalog, 'getNewVolumeIntent' | 'getVolumeState'>, jobId: string): Promise<FoundIntent | undefined> {
  const own = await catalog.getNewVolumeIntent(jobId);
  if (own) return { ...own, legacy: false };
  const state = await catalog.getVolumeState(`${LEGACY_INTENT_PREFIX}${jobId}`);
  return state && { jobId, backupId: state.backupId, since: state.since, legacy: true };
}

/** The intent of the restore job that created `volume` (its metadata names the job), or undefined: none, or none left. */
export async function intentOfVolume(catalog: Pick<Catalog, 'getNewVolumeIntent' | 'getVolumeState'>, volume: Pick<Volume, 'metadata'>): Promise<NewVolumeIntent | undefined> {
  const jobId = volume.metadata?.[RESTORE_JOB_METADATA_KEY];
  return jobId ? findIntent(catalog, jobId) : undefined;
}

/**
 * How a volume that a restore to a new volume created is to be shown while its job's intent is
 * recorded (the volume is the caller's only once the intent is gone): `restoring-backup` while
 * that restore may still run (intentLive), as Cinder's new volume is from its creation;
 * `error_restoring` once it cannot (recovery deletes the volume: recoverNewVolumeIntents).
 * Undefined for a volume no recorded intent names. A flow state laid over the volume says more,
 * and is judged first.
 */
export async function intentVolumeStatus(
  catalog: Pick<Catalog, 'getNewVolumeIntent' | 'getVolumeState' | 'getBackup'>,
  volume: Pick<Volume, 'metadata'>,
): Promise<'restoring-backup' | 'error_restoring' | undefined> {
  return (await judgedIntent(catalog, volume))?.status;
}

/**
 * The recorded intent of the restore job that created `volume`, with the status it gives the
 * volume (intentVolumeStatus's), or undefined when no recorded intent names the volume.
 */
export async function judgedIntent(
  catalog: Pick<Catalog, 'getNewVolumeIntent' | 'getVolumeState' | 'getBackup'>,
  volume: Pick<Volume, 'metadata'>,
): Promise<{ intent: NewVolumeIntent; status: 'restoring-backup' | 'error_restoring' } | undefined> {
  const intent = await intentOfVolume(catalog, volume);
  return intent && judgeIntent(catalog, intent);
}

/**
 * judgedIntent of an intent already found (`intent`, the one naming the volume): what a listing
 * that read every intent at once (intentsByJob) judges each volume's by. Reads only the record of
 * the intent's backup, and not that while the intent's reader is gone.
 */
export async function judgeIntent(
  catalog: Pick<Catalog, 'getBackup'>,
  intent: NewVolumeIntent,
): Promise<{ intent: NewVolumeIntent; status: 'restoring-backup' | 'error_restoring' }> {
  return { intent, status: (await intentLive(intent, async () => backupLive(catalog, intent.backupId))) ? 'restoring-backup' : 'error_restoring' };
}

/** Whether backup `backupId` is `restoring` by someone who may still be working on it. */
async function backupLive(catalog: Pick<Catalog, 'getBackup'>, backupId: string): Promise<boolean> {
  const backup = await unlessNotFound(catalog.getBackup(backupId));
  return backup?.status === 'restoring' && mayBeWorkedOn(backup);
}

/**
 * Whether the restore that recorded `intent` may still run. One naming its reader (every intent a
 * newer Cairn writes) is judged by that reader alone (reader-leftovers.ts): not once it is gone,
 * whatever else reads its backup; and while it may be alive, also once its backup's record has
 * left `restoring`, since the job deletes its intent after the claim's release (the record's
 * final write), still holding the record. One naming no reader (an older Cairn's, a legacy one)
 * is judged by its backup's record (`backupLive`: `restoring`, worked on).
 */
async function intentLive(intent: { backupId: string; reader?: BackupReader }, backupLive: () => Promise<boolean>): Promise<boolean> {
  return intent.reader !== undefined ? !readerGone(intent) : backupLive();
}

/** The legacy intents among the volume flow states `states` (those whose key names no volume). */
function legacyIntents(states: readonly VolumeFlowState[]): FoundIntent[] {
  return states.flatMap((s) => {
    const jobId = legacyIntentJobId(s.volumeId);
    return jobId === undefined ? [] : [{ jobId, backupId: s.backupId, since: s.since, legacy: true }];
  });
}

/** Every intent recorded: the catalog's, then the legacy ones. */
async function listIntents(catalog: Pick<Catalog, 'listNewVolumeIntents' | 'listVolumeStates'>): Promise<FoundIntent[]> {
  const own = (await catalog.listNewVolumeIntents()).map((i) => ({ ...i, legacy: false }));
  return [...own, ...legacyIntents(await catalog.listVolumeStates())];
}

/**
 * Every recorded intent by its job's id, as findIntent finds each: the catalog's own (`own`, as
 * Catalog.listNewVolumeIntents lists them) before a legacy one of the same job kept among the
 * volume flow states `states` (as Catalog.listVolumeStates lists them). What a listing of many
 * volumes looks each volume's intent up in (intentNamedBy) instead of reading it per volume.
 */
export function intentsByJob(own: readonly NewVolumeIntent[], states: readonly VolumeFlowState[]): ReadonlyMap<string, NewVolumeIntent> {
  const byJob = new Map<string, NewVolumeIntent>();
  for (const intent of legacyIntents(states)) byJob.set(intent.jobId, intent);
  for (const intent of own) byJob.set(intent.jobId, intent);
  return byJob;
}

/** intentOfVolume looked up in `byJob` (intentsByJob): the intent of the restore job that created `volume`, or undefined. */
export function intentNamedBy(byJob: ReadonlyMap<string, NewVolumeIntent>, volume: Pick<Volume, 'metadata'>): NewVolumeIntent | undefined {
  const jobId = volume.metadata?.[RESTORE_JOB_METADATA_KEY];
  return jobId ? byJob.get(jobId) : undefined;
}

/**
 * Deletes every volume whose metadata names restore job `jobId` (one gone meanwhile counts as
 * deleted): `removed` their ids, `failed` those that could not be deleted, with the error. Reads
 * the driver's whole listing: for the paths that settle a job's volume after a failure.
 */
export async function deleteVolumesOfJob(
  volumes: Pick<VolumeDriver, 'listVolumes' | 'deleteVolume'>,
  jobId: string,
): Promise<{ removed: string[]; failed: { volumeId: string; error: unknown }[] }> {
  const removed: string[] = [];
  const failed: { volumeId: string; error: unknown }[] = [];
  for (const volume of await volumes.listVolumes()) {
    if (volume.metadata?.[RESTORE_JOB_METADATA_KEY] !== jobId) continue;
    try {
      await unlessNotFound(volumes.deleteVolume(volume.id));
      removed.push(volume.id);
    } catch (error) {
      failed.push({ volumeId: volume.id, error });
    }
  }
  return { removed, failed };
}

/** Deletes `intent` where it is kept. Idempotent. */
async function deleteIntent(catalog: Pick<Catalog, 'deleteNewVolumeIntent' | 'clearVolumeState'>, intent: FoundIntent): Promise<void> {
  if (intent.legacy) await catalog.clearVolumeState(`${LEGACY_INTENT_PREFIX}${intent.jobId}`);
  else await catalog.deleteNewVolumeIntent(intent.jobId);
}

/**
 * `CONFLICT` (details `{ volumeId, volumeStatus, backupId }`) when `volume` is one that a restore
 * to a new volume created and has not settled: its metadata names a restore job whose intent (the
 * catalog's or a legacy one) is still recorded. `volumeStatus` is the volume's as getVolume shows it
 * (intentVolumeStatus): `restoring-backup` while that restore may still run, `error_restoring` once
 * it cannot (recovery deletes such a volume: a backup or a restore of it meanwhile would make a
 * volume that recovery deletes hold data someone wants). A volume restored completely keeps the
 * job's id, but its intent is gone.
 */
export async function assertNotLeftByRestore(catalog: Pick<Catalog, 'getNewVolumeIntent' | 'getVolumeState' | 'getBackup'>, volume: Pick<Volume, 'id' | 'metadata'>): Promise<void> {
  const judged = await judgedIntent(catalog, volume);
  if (!judged) return;
  const { intent, status } = judged;
  const why = status === 'restoring-backup' ? 'is being created by a restore' : 'was left by a restore that failed or died (recovery deletes it)';
  throw new CairnError('CONFLICT', `volume ${volume.id} is ${status}: it ${why} of backup ${intent.backupId}`, {
    details: { volumeId: volume.id, volumeStatus: status, backupId: intent.backupId },
  });
}

/**
 * Settles the intents of restores to a new volume that ended or died without settling their
 * volume (recoverInFlight's step for them). An intent is judged live by intentLive: by its reader
 * (NewVolumeIntent.reader), or, naming none, by its backup's record (`liveNow`: the job claims
 * the backup before it writes the intent). For each intent not live, in the section of its
 * backup: every volume whose metadata names its job is deleted (`report.removedVolumes`; one that
 * cannot be, `BUSY` while attached, goes to `report.errors` and its intent is kept for the next
 * run), then the flow states of that backup's volumes that are gone, then the intent. Only
 * intents of backup `only`, when given. Idempotent.
 */
export async function recoverNewVolumeIntents(deps: {
  catalog: Catalog;
  volumes: VolumeDriver;
  only: string | undefined;
  liveNow: (backupId: string) => Promise<boolean>;
  /** Runs a step in the section of `backupId` (recoverInFlight's step: `label` names it in `errors` when it has to be left for the next run). */
  section: (label: string, backupId: string, fn: () => Promise<void>) => Promise<void>;
  report: Required<RecoveryReport>;
}): Promise<void> {
  const { catalog, volumes, only, liveNow, section, report } = deps;
  for (const listed of await listIntents(catalog)) {
    if (only !== undefined && listed.backupId !== only) continue;
    if (await intentLive(listed, () => liveNow(listed.backupId))) continue;
    await section(listed.jobId, listed.backupId, async () => {
      // As it is now: another recovery may have settled it since it was listed.
      const intent = await findIntent(catalog, listed.jobId);
      if (!intent || intent.legacy !== listed.legacy || (await intentLive(intent, () => liveNow(intent.backupId)))) return;
      const { removed, failed } = await deleteVolumesOfJob(volumes, intent.jobId);
      report.removedVolumes.push(...removed);
      for (const { volumeId, error: err } of failed) {
        report.errors.push(`${volumeId}: ${String((err as { code?: string })?.code ?? '')} the volume of an unfinished restore of backup ${intent.backupId} could not be deleted: ${String((err as Error)?.message ?? err)}`);
      }
      if (failed.length > 0) return;
      // The states that restore left (`restoring-backup`, or `error_restoring` from a job that
      // could not delete its volume) name volumes that are gone now: recoverInFlight deletes
      // those right after this, as it does every state of a volume that is gone (clearedStates).
      await deleteIntent(catalog, intent);
    });
  }
}
