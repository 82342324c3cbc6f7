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
