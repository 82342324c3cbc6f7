import type { Catalog } from '../contracts/catalog.js';
import type { BackupReader, VolumeFlowState, VolumeFlowStatus } from '../contracts/records.js';
import type { Volume } from '../contracts/volume-driver.js';
import { CairnError, isAlreadyExists } from '../errors.js';
import { nowIso } from '../util/clock.js';
import { stateAsSettled } from './reader-leftovers.js';
import { backupFlowOver, judgedVolumeState } from './backup-leftovers.js';

/*
 * The flow states the manager lays over volumes (`backing-up`, `restoring-backup`,
 * `error_restoring`), kept in the catalog so that every process sharing it sees them.
 */

/**
 * `CONFLICT` (details `{volumeId, volumeStatus}`, the flow state found, as beginVolumeFlow's) when
 * the volume is in a flow. `error_restoring` (a partial restore) may be restored over, never
 * backed up (as in Cinder). The state is judged as judgedVolumeState does: a `restoring-backup`
 * state whose reader is gone is `error_restoring`, a `backing-up` one whose backup's flow is over is none.
 */
export async function assertNoFlow(catalog: Pick<Catalog, 'getVolumeState' | 'getBackup'>, volumeId: string, next: 'backup' | 'restore'): Promise<void> {
  const flow = await judgedVolumeState(catalog, volumeId);
  if (!flow || (flow.status === 'error_restoring' && next === 'restore')) return;
  if (flow.status === 'error_restoring') {
    throw new CairnError('CONFLICT', `volume ${volumeId} is error_restoring (a restore of backup ${flow.backupId} failed part-way); restore it again before backing it up`, {
      details: { volumeId, volumeStatus: flow.status },
    });
  }
  throw new CairnError('CONFLICT', `volume ${volumeId} is ${flow.status}`, { details: { volumeId, volumeStatus: flow.status } });
}

/**
 * Lays `status` over a volume that assertNoFlow let through; `CONFLICT` when a flow (of another
 * process, begun since) has it. A volume in no flow is taken with an only-if-absent write, so of
 * flows that processes sharing the catalog begin on it at once, one proceeds and the others are
 * refused. A restore takes an `error_restoring` volume over (keeping its previous status) in
 * `section` of the backup the state names, reading the state again there: of restores that
 * processes begin on it at once, one replaces it and the others find it replaced (`CONFLICT`).
 * The flow excludes them itself, whether or not the driver's attach would (a flow-override driver
 * is never attached by core). A `backing-up` state whose backup's flow is over (backupFlowOver: its
 * clear failed) is replaced the same way, in the section of the backup it names, as what
 * recovery would clear. `section` is the manager's (BackupClaims.exclusive); the caller
 * holds no section. Resolves with the `error_restoring` state a restore replaced (for it to put
 * back when it fails having written nothing: endUnwrittenRestore), else undefined. A restore names
 * its `reader` (its manager's entry in the backup's readers) on the state: VolumeFlowState.reader.
 */
export async function beginVolumeFlow(catalog: Catalog, volume: Volume, status: VolumeFlowStatus, backupId: string, section: Section, reader?: BackupReader): Promise<VolumeFlowState | undefined> {
  const existing = stateAsSettled(await catalog.getVolumeState(volume.id));
  const state = { volumeId: volume.id, status, backupId, since: nowIso(), ...(reader ? { reader } : {}) };
  if (existing?.status === 'error_restoring' && status === 'restoring-backup') {
    await section(existing.backupId, async () => {
      const now = stateAsSettled(await catalog.getVolumeState(volume.id));
      if (now?.status !== 'error_restoring' || now.backupId !== existing.backupId || now.since !== existing.since) {
        throw new CairnError('CONFLICT', `volume ${volume.id} was taken by another flow meanwhile`, { details: { volumeId: volume.id, volumeStatus: now?.status } });
      }
      await catalog.putVolumeState({ ...state, previousStatus: existing.previousStatus });
    });
    return existing;
  }
  if (existing?.status === 'backing-up' && (await backupFlowOver(catalog, existing.backupId))) {
    await section(existing.backupId, async () => {
      const now = await catalog.getVolumeState(volume.id);
      if (now?.status !== 'backing-up' || now.backupId !== existing.backupId || now.since !== existing.since || !(await backupFlowOver(catalog, now.backupId))) {
        throw new CairnError('CONFLICT', `volume ${volume.id} was taken by another flow meanwhile`, { details: { volumeId: volume.id, volumeStatus: now?.status } });
      }
      await catalog.putVolumeState({ ...state, previousStatus: volume.status });
    });
    return undefined;
  }
  if (existing) throw new CairnError('CONFLICT', `volume ${volume.id} is ${existing.status}`, { details: { volumeId: volume.id, volumeStatus: existing.status } });
  try {
    await catalog.putVolumeState({ ...state, previousStatus: volume.status }, { ifAbsent: true });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    throw new CairnError('CONFLICT', `volume ${volume.id} was taken by another flow meanwhile`, { cause: err, details: { volumeId: volume.id } });
  }
  return undefined;
}

/** Runs `fn` alone on one backup record (BackupClaims.exclusive). */
export type Section = <T>(backupId: string, fn: () => Promise<T>) => Promise<T>;

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

/**
 * Settles the state of an existing volume whose restore failed before anything was written to it
 * (its content is what it was before the restore began): the `error_restoring` state the restore
 * replaced (`replaced`, from beginVolumeFlow) is put back as it was, and a volume that had none is
 * left in none. Called by the restore that holds the volume's `restoring-backup` state, before
 * its claim on the backup is released (recovery.ts: a state is settled while its backup is live).
 */
export async function endUnwrittenRestore(catalog: Catalog, volumeId: string, replaced: VolumeFlowState | undefined): Promise<void> {
  if (replaced) await catalog.putVolumeState(replaced);
  else await catalog.clearVolumeState(volumeId);
}
