import type { Catalog } from '../contracts/catalog.js';
import type { BackupReader, BackupRecord, VolumeFlowState } from '../contracts/records.js';
import { nowIso } from '../util/clock.js';
import { isThisProcess } from '../util/process-owner.js';
import { hasDeadReaders } from './backup-readers.js';
import { currentReaders, readerMayBeAlive } from './live-records.js';

/*
 * What a restore leaves in the catalog names its reader (BackupRecord.readers): the
 * `restoring-backup` state it lays over its volume (VolumeFlowState.reader) and, restoring to a new
 * volume, its intent (NewVolumeIntent.reader). A backup stays `restoring` while any of its readers
 * may be alive, so these are judged by their own reader, not by the backup's record: once that
 * reader is gone (its process died, or this process's flow ended without settling them) they are
 * settled at once, by recovery and by the claims and releases of the backup's other readers, which
 * drop the entries of readers that are gone (backup-readers.ts).
 */

/** This manager's entry in the `restoring` record `claimed` (as its claim wrote it), for what its restore leaves to name. */
export function ownEntry(claimed: BackupRecord, readerId: string): BackupReader | undefined {
  return (currentReaders(claimed) ?? []).find((r) => r.id === readerId && isThisProcess(r.owner));
}

/** Whether what backup `backupId`'s restore left names a reader, and that reader is gone. */
export function readerGone(left: { backupId: string; reader?: BackupReader }): boolean {
  return left.reader !== undefined && !readerMayBeAlive(left.backupId, left.reader);
}

/**
 * In the section of `record` (as read there), before a claim or release writes it without its
 * readers that are gone: the `restoring-backup` states those readers laid become `error_restoring`
 * (what recovery makes of an abandoned restore's; the volume may be partly written). Their intents
 * need the volume driver (the volumes are deleted) and are left to recovery. Nothing is read unless
 * the record names a reader that is gone. Resolves with the volumes settled.
 */
export async function settleGoneReaders(catalog: Pick<Catalog, 'listVolumeStates' | 'putVolumeState'>, record: BackupRecord): Promise<string[]> {
  if (!hasDeadReaders(record)) return [];
  const settled: string[] = [];
  for (const state of await catalog.listVolumeStates()) {
    if (state.backupId !== record.id || state.status !== 'restoring-backup' || !readerGone(state)) continue;
    await catalog.putVolumeState({ ...state, status: 'error_restoring', since: nowIso() });
    settled.push(state.volumeId);
  }
  return settled;
}

/**
 * A volume's flow state as the flows judge it: a `restoring-backup` state whose reader is gone
 * (readerGone: its process died, or its flow here ended without settling it) is `error_restoring`,
 * what recovery makes of it (Cinder: the volume of a restore that died is `error_restoring`), so
 * the next flow on the volume, a delete of it, or a look at it, need not wait for a recovery: the
 * volume may be deleted, restored again, its metadata changed, and it is shown `error_restoring`.
 * Nothing is written: the state settled is what a flow that takes the volume over (its section's
 * re-read compares `since`) or recovery replaces. Any other state, or none, is as it is.
 */
export function stateAsSettled<S extends VolumeFlowState | undefined>(state: S): S {
  if (state?.status !== 'restoring-backup' || !readerGone(state)) return state;
  return { ...state, status: 'error_restoring' };
}
