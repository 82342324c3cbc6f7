import type { Catalog } from '../contracts/catalog.js';
import type { BackupRecord } from '../contracts/records.js';
import type { ChangedBlockTracking, Checkpoint } from '../contracts/volume-driver.js';
import { byCreation } from '../memory/memory-catalog.js';
import { mayBeWorkedOn } from './live-records.js';

/** Statuses of a record whose data is complete (`available`, or `available` being restored). */
const COMPLETE: ReadonlySet<BackupRecord['status']> = new Set(['available', 'restoring']);

/**
 * Run by a backup (`record`) that ended `available` with checkpoint `own`: deletes the
 * checkpoints created before `own` that neither the newest backup of each target whose data is
 * complete (`available` or `restoring`) still needs nor a backup someone may still be creating
 * names (mayBeWorkedOn: another process's backup of the volume, whose record names its
 * checkpoint while it copies, or another job of this process). Those created after `own` are left to the backups that took them: by
 * then this backup no longer holds the volume, and a backup that began since (in another
 * process) may not have named its checkpoint in its record yet.
 *
 * In a catalog, each checkpoint is named by the one record whose backup took it (an archive's
 * import drops it; a record exported with exportRecord names it again only in another catalog). So
 * when the only older checkpoint is `parent`'s and this record sorts after the parent's, no
 * record needs to be read: the parent is no longer its target's newest complete backup (this
 * one, of the same target, is newer), and its backup has ended. Otherwise every record of the
 * volume is read.
 */
export async function pruneCheckpoints(cbt: ChangedBlockTracking, catalog: Pick<Catalog, 'listBackups'>, record: BackupRecord, own: Checkpoint, parent: BackupRecord | undefined): Promise<void> {
  const volumeId = record.volumeId;
  const ownTime = Date.parse(own.createdAt);
  const older = (await cbt.listCheckpoints(volumeId)).filter((cp) => cp.id !== own.id && Date.parse(cp.createdAt) < ownTime);
  if (older.length === 0) return;
  if (parent?.checkpointId && byCreation(parent, record) < 0 && older.every((cp) => cp.id === parent.checkpointId)) {
    await cbt.deleteCheckpoint(volumeId, parent.checkpointId);
    return;
  }
  const backups = await catalog.listBackups({ volumeId });
  // A target's next incremental builds on its newest backup whose data is complete: `restoring`
  // is `available` being read, and goes back to `available` when its restores end, so its
  // checkpoint is that target's base as much as an available one's (without it, the next
  // incremental could not name a checkpoint and would read the whole volume).
  const newestPerTarget = new Map<string, BackupRecord>();
  for (const b of backups) if (COMPLETE.has(b.status)) newestPerTarget.set(b.service, b);
  const running = backups.filter((b) => b.status === 'creating' && mayBeWorkedOn(b));
  const keep = new Set([...newestPerTarget.values(), ...running].map((b) => b.checkpointId).filter(Boolean));
  for (const cp of older) if (!keep.has(cp.id)) await cbt.deleteCheckpoint(volumeId, cp.id);
}
