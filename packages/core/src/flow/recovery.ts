import type { Catalog, SectionOptions } from '../contracts/catalog.js';
import type { BackupRecord } from '../contracts/records.js';
import type { VolumeDriver } from '../contracts/volume-driver.js';
import { isNotFound, unlessNotFound } from '../errors.js';
import { noSpaceErrno } from '../util/no-space.js';
import { nowIso } from '../util/clock.js';
import { currentOwner } from '../util/process-owner.js';
import { hasDeadReaders, withLiveReaders } from './backup-readers.js';
import { holdRecord, type LetGo } from './live-records.js';
import { IMPORT_INTERRUPTED, importClaimOf } from './import-claim.js';
import { legacyIntentJobId, recoverNewVolumeIntents } from './new-volume-intents.js';
import { readerGone } from './reader-leftovers.js';

/** Statuses of a record a flow works on. */
export const IN_FLOW: ReadonlySet<BackupRecord['status']> = new Set(['creating', 'restoring', 'deleting']);

/** Name prefix of the snapshots the flow takes for itself (`cairn-temp-<backupId>`); recovery deletes leftovers. */
export const TEMP_SNAPSHOT_PREFIX = 'cairn-temp-';

export interface RecoveryReport {
  /** Backups moved from `creating` to `error`. */
  failedBackups: string[];
  /** Backups moved from `restoring` back to `available`. */
  restoredBackups: string[];
  /** Backups whose interrupted delete was resumed (and finished, unless listed in `errors`). */
  resumedDeletes: string[];
  /** Volumes put back to their previous status (were `backing-up`). */
  resetVolumes: string[];
  /** Volumes left in `error_restoring` (were `restoring-backup`). */
  errorRestoringVolumes: string[];
  /** Temporary snapshots removed. */
  removedSnapshots: string[];
  /**
   * Volumes a restore to a new volume created and left behind (its job could not delete them,
   * or its process died), deleted. recoverInFlight always sets it; optional so that reports built
   * before it existed (a front end's test doubles) still type.
   */
  removedVolumes?: string[];
  /**
   * Volumes that no longer exist whose flow state was left behind (any status), the state
   * deleted. Optional for the same reason as removedVolumes.
   */
  clearedStates?: string[];
  /** Backups left alone because their owner may still be working on them. */
  skipped: string[];
  /** Steps that failed, as `id: CODE message`. */
  errors: string[];
}

/**
 * Resolves what a crash left in flight, exactly as Cinder's backup manager does at start:
 * creating → error (an archive import's claim with its own reason, IMPORT_INTERRUPTED); restoring → available with the volume in error_restoring (a record read by
 * several processes once none of its readers is alive; the entries of those gone are dropped
 * meanwhile, BackupRecord.readers); deleting resumed;
 * what a restore left that names its reader (VolumeFlowState.reader, NewVolumeIntent.reader) is
 * settled once that reader is gone, even while other readers keep its backup `restoring`
 * (reader-leftovers.ts);
 * a volume left backing-up returns to its previous status; temporary snapshots go; the flow state
 * of a volume that is gone (`NOT_FOUND` from the driver) is deleted. Idempotent.
 *
 * A restore to a new volume owns its volume (new-volume-intents.ts): the intent of a restore
 * that ended or died (its reader gone; naming none, its backup no longer in a live flow:
 * intentLive) has every volume that names its job deleted (a volume
 * still attached, `BUSY`, is reported in `errors` and its intent kept for the next run), then the
 * flow states that restore left of volumes now gone, then the intent itself. Intents an older
 * Cairn kept as volume flow states are settled the same way.
 *
 * On a full store a full recovery goes on past the steps it has no room for (reported in
 * `errors`, left for the next run), and a resumed delete's section may spend the store's space
 * reserve (Catalog.section `freesSpace`): see `step` below.
 */
export async function recoverInFlight(deps: {
  catalog: Catalog;
  volumes: VolumeDriver;
  /** Resumes an interrupted delete. Omitted: a `deleting` record is left as it is (not listed in the report). */
  finishDelete?: (backup: BackupRecord) => Promise<void>;
  /**
   * Whether this process can resume the delete of `backup` (its target is configured here).
   * When it cannot, the record is left as it is, with its owner, and the reason is in `errors`.
   * Default: always.
   */
  canFinishDelete?: (backup: BackupRecord) => boolean;
  /** True when someone may still be working on the record (then it is not touched): see mayBeWorkedOn. */
  isLive: (backup: BackupRecord) => boolean;
  /**
   * Runs one record's re-read, judgement and writes alone on that record (BackupClaims.exclusive:
   * the catalog's section), so two processes recovering at once resolve a record once, and a
   * flow's check-then-write of it sees no recovery in between. Default: the catalog's section.
   * `options.freesSpace` (Catalog.section) is set for the section of a record listed `deleting`:
   * a delete resumed on a full disk takes it, so it may spend a store's space reserve.
   */
  section?: <T>(backupId: string, fn: () => Promise<T>, options?: SectionOptions) => Promise<T>;
  /**
   * Resolve only this backup: its record (none when it is unknown), the volume state a flow of it
   * left, its temporary snapshot. Default: every backup.
   */
  only?: string;
}): Promise<RecoveryReport> {
  const { catalog, volumes, only } = deps;
  const section = deps.section ?? (<T>(backupId: string, fn: () => Promise<T>, options?: SectionOptions) => catalog.section(backupId, fn, undefined, options));
  const report: Required<RecoveryReport> = {
    failedBackups: [],
    restoredBackups: [],
    resumedDeletes: [],
    resetVolumes: [],
    errorRestoringVolumes: [],
    removedSnapshots: [],
    removedVolumes: [],
    clearedStates: [],
    skipped: [],
    errors: [],
  };
  /**
   * One step of the recovery: `fn` in the section of `backupId`. A full recovery (no `only`)
   * whose step fails for space (noSpaceErrno: a full store has no room for the section's lock or
   * the step's write, and a put is whole or absent: the record or state is as it was) reports it in
   * `errors` under `label` and goes on,
   * the step left for the next run: a full disk must not stop the resumed deletes, nor the
   * deletes and GCs a front end runs after recovery, that free space. Any other failure rejects.
   */
  const step = async (label: string, backupId: string, fn: () => Promise<void>, options?: SectionOptions): Promise<void> => {
    try {
      await section(backupId, fn, options);
    } catch (err) {
      if (only !== undefined || !noSpaceErrno(err)) throw err;
      report.errors.push(`${label}: ${String((err as { code?: unknown })?.code ?? '')} ${String((err as Error)?.message ?? err)}`);
    }
  };
  const live = new Set<string>();
  const records = only === undefined ? await catalog.listBackups() : [await unlessNotFound(catalog.getBackup(only))].filter((b) => b !== undefined);
  if (only !== undefined && records.length === 0) return report;
  for (const listed of records) {
    if (!IN_FLOW.has(listed.status)) continue;
    // Judged before the read as well: a flow that still holds the record then may write its final
    // status while the read is in flight, and the read return what was there before. A live record
    // naming readers that are gone is read again in its section, to drop them.
    if (deps.isLive(listed) && !(listed.status === 'restoring' && hasDeadReaders(listed))) {
      live.add(listed.id);
      report.skipped.push(listed.id);
      continue;
    }
    // Judged and written from the record as it is now, not as listed: the listing may be old by
    // the time its turn comes (a long listing, deletes resumed before it), and a flow that held
    // it then (of this process, in a server recovering between requests) may have ended since,
    // with its record's final write. A flow lets go of a record only once that write settled, so a
    // record read after it was seen held by no one, and still in a flow status, was left behind.
    let resume: { record: BackupRecord; letGo: LetGo } | undefined;
    // A resumed delete frees space: its section, as a delete's, may spend a store's space reserve.
    const freesSpace = listed.status === 'deleting' && deps.finishDelete !== undefined;
    await step(listed.id, listed.id, async () => {
      // Read in the section even when resolving only this backup: another process may have
      // resolved it since it was read.
      const b = await unlessNotFound(catalog.getBackup(listed.id));
      if (!b || !IN_FLOW.has(b.status)) return;
      if (deps.isLive(b)) {
        live.add(b.id);
        report.skipped.push(b.id);
        // Read by processes of which some are gone: their entries go, the record stays `restoring`.
        if (b.status === 'restoring' && hasDeadReaders(b)) await catalog.putBackup(withLiveReaders(b));
        return;
      }
      if (b.status === 'creating') {
        // An archive import's claim (import-claim.ts) keeps its mark and gets a reason of its own:
        // an import of the same archive replaces it.
        const failReason = importClaimOf(b) !== undefined ? IMPORT_INTERRUPTED : 'INTERNAL: interrupted by a restart';
        await catalog.putBackup({ ...b, status: 'error', owner: undefined, failReason, updatedAt: nowIso() });
        report.failedBackups.push(b.id);
      } else if (b.status === 'restoring') {
        await catalog.putBackup({ ...b, status: 'available', owner: undefined, readers: undefined, updatedAt: nowIso() });
        report.restoredBackups.push(b.id);
      } else if (b.status === 'deleting' && deps.finishDelete) {
        if (deps.canFinishDelete?.(b) === false) {
          report.errors.push(`${b.id}: NOT_FOUND its target ${b.service} is not configured here: its delete is left to a process that has it`);
          return;
        }
        // Taken over in the section (this process its owner, the record held), resumed after it:
        // the data delete may be long, and other processes' sections on the record must not wait
        // for it. They find a live owner and leave it alone.
        const letGo = holdRecord(b.id);
        try {
          const record: BackupRecord = { ...b, owner: currentOwner(), updatedAt: nowIso() };
          await catalog.putBackup(record);
          resume = { record, letGo };
        } catch (err) {
          letGo();
          throw err;
        }
      }
    }, freesSpace ? { freesSpace } : undefined);
    if (resume) {
      const { record, letGo } = resume;
      report.resumedDeletes.push(record.id);
      try {
        // Through a promise, so a finishDelete that throws at once is reported like one that rejects.
        await Promise.resolve()
          .then(() => deps.finishDelete!(record))
          .catch((err) => report.errors.push(`${record.id}: ${String(err?.code ?? '')} ${String(err?.message ?? err)}`));
      } finally {
        letGo();
      }
    }
  }
  // The records were listed once, above: a job of a live owner (this process's own, in a server
  // that recovers between requests) may have begun since. A job writes its record before its
  // volume state and its snapshot, so a volume state or snapshot is left alone when its backup's
  // record, read again now, is in a flow of a live owner. A restore settles its volume's state
  // before its record leaves `restoring`: once the record read here is no longer restoring, the
  // state read after it is no longer that restore's (a `restoring-backup` still there was left
  // by a restore that never settled it).
  const liveNow = async (backupId: string): Promise<boolean> => {
    if (live.has(backupId)) return true;
    const b = await unlessNotFound(catalog.getBackup(backupId));
    if (!b || !IN_FLOW.has(b.status) || !deps.isLive(b)) return false;
    live.add(backupId);
    return true;
  };
  // Restores to a new volume that ended or died without settling their volume (new-volume-intents.ts).
  await recoverNewVolumeIntents({ catalog, volumes, only, liveNow, section: step, report });
  for (const listed of await catalog.listVolumeStates()) {
    if (only !== undefined && listed.backupId !== only) continue;
    // Legacy intents (kept as flow states by an older Cairn) are settled above, never marked error_restoring.
    if (legacyIntentJobId(listed.volumeId) !== undefined) continue;
    // A state of a volume that is gone (deleted by the driver directly, or by a delete that died
    // between the volume and its state) names nothing: deleted, whatever its status, unless a
    // live flow of its backup may still be settling it.
    // A state whose restore's reader is gone is its own: settled whatever else reads its backup.
    const mine = readerGone(listed);
    if (await isGone(volumes, listed.volumeId)) {
      if (!mine && (await liveNow(listed.backupId))) continue;
      await step(listed.volumeId, listed.backupId, async () => {
        const state = await catalog.getVolumeState(listed.volumeId);
        if (!state || state.backupId !== listed.backupId || state.since !== listed.since || !(await isGone(volumes, listed.volumeId))) return;
        await catalog.clearVolumeState(state.volumeId);
        report.clearedStates.push(state.volumeId);
      });
      continue;
    }
    // Only these two are settled; and a live flow's state is left alone without waiting for a
    // section (judged again inside it).
    if (listed.status !== 'backing-up' && listed.status !== 'restoring-backup') continue;
    if (!mine && (await liveNow(listed.backupId))) continue;
    // In the section of the backup the state names: another recovery of it waits, and reads the
    // state again after this one has settled it, so it never settles a state a flow has since
    // put in its place (a restore's of an `error_restoring` volume, a new flow's once cleared).
    await step(listed.volumeId, listed.backupId, async () => {
      if (!mine && (await liveNow(listed.backupId))) return;
      // As it is now: a job that began meanwhile may have replaced the state listed.
      const state = await catalog.getVolumeState(listed.volumeId);
      if (!state || state.backupId !== listed.backupId || state.status !== listed.status) return;
      if (mine && (state.since !== listed.since || !readerGone(state))) return;
      if (state.status === 'backing-up') {
        await catalog.clearVolumeState(state.volumeId);
        report.resetVolumes.push(state.volumeId);
      } else if (state.status === 'restoring-backup') {
        await catalog.putVolumeState({ ...state, status: 'error_restoring', since: nowIso() });
        report.errorRestoringVolumes.push(state.volumeId);
      }
    });
  }
  if (volumes.capabilities.snapshots) {
    // A backup's temporary snapshot is one of its volume's.
    const volumeIds = only === undefined ? (await volumes.listVolumes()).map((v) => v.id) : [records[0]!.volumeId];
    for (const volumeId of volumeIds) {
      const snapshots = await volumes.listSnapshots(volumeId).catch((err) => (only !== undefined && isNotFound(err) ? [] : Promise.reject(err)));
      for (const snap of snapshots) {
        // Named after the backup that took it; a live backup's snapshot is still in use.
        if (!snap.name.startsWith(TEMP_SNAPSHOT_PREFIX)) continue;
        const backupId = snap.name.slice(TEMP_SNAPSHOT_PREFIX.length);
        if ((only !== undefined && backupId !== only) || (await liveNow(backupId))) continue;
        await volumes
          .deleteSnapshot(snap.id)
          .then(() => report.removedSnapshots.push(snap.id))
          .catch((err) => report.errors.push(`${snap.id}: ${String(err?.code ?? '')} ${String(err?.message ?? err)}`));
      }
    }
  }
  return report;
}

/**
 * Whether the driver answers `NOT_FOUND` for the volume. Any other error is "not known to be
 * gone": the state is then judged as before, and recovery does not fail on it.
 */
async function isGone(volumes: VolumeDriver, volumeId: string): Promise<boolean> {
  return volumes.getVolume(volumeId).then(
    () => false,
    (err) => isNotFound(err),
  );
}
