import type { Catalog } from '../contracts/catalog.js';
import type { BackupRecord, VolumeFlowState } from '../contracts/records.js';
import { unlessNotFound } from '../errors.js';
import { mayBeWorkedOn } from './live-records.js';
import { stateAsSettled } from './reader-leftovers.js';

/*
 * A backup clears its volume's `backing-up` state before its record's final write (runBackup);
 * when that clear fails (a warning), the state outlives the flow. Such a state is judged as
 * recovery settles it (cleared: the volume back to its driver's status), so the volume need not
 * wait for a recovery to be backed up, restored, deleted or changed again, nor be shown busy.
 */

/**
 * Whether the backup that laid a `backing-up` state is no longer in a live flow: its record is
 * gone, no longer `creating` (its flow is past its clear of the state, which comes before the
 * final write), or `creating` with no one working on it (mayBeWorkedOn: its process died, or its
 * flow here ended without its final write). A record that cannot be read (getBackup failing other
 * than `NOT_FOUND`: `CORRUPT`, a store outage `UNAVAILABLE`) says nothing of its flow, which is
 * then not judged over: the state stands, as it did before states were judged (the volume shown
 * `backing-up`, flows, deletes and changes of it `CONFLICT`), until the record reads or recovery
 * settles it. Never throws for the record.
 */
export async function backupFlowOver(catalog: Pick<Catalog, 'getBackup'>, backupId: string): Promise<boolean> {
  let backup: BackupRecord | undefined;
  try {
    backup = await unlessNotFound(catalog.getBackup(backupId));
  } catch {
    return false;
  }
  return !backup || backup.status !== 'creating' || !mayBeWorkedOn(backup);
}

/**
 * A volume's flow state as the flows judge it: stateAsSettled's (a `restoring-backup` state whose
 * reader is gone is `error_restoring`), and a `backing-up` state whose backup's flow is over
 * (backupFlowOver; one whose backup's record cannot be read stands) is none. Nothing is written:
 * a flow that takes the volume over replaces such a state in the section of the backup it names
 * (beginVolumeFlow), and recovery clears it.
 */
export async function judgedVolumeState(catalog: Pick<Catalog, 'getVolumeState' | 'getBackup'>, volumeId: string): Promise<VolumeFlowState | undefined> {
  return judgeVolumeState(catalog, await catalog.getVolumeState(volumeId));
}

/**
 * judgedVolumeState of a flow state already read (`state`, or none): what a listing that read
 * every state at once (Catalog.listVolumeStates) judges each volume's by. Reads only the record of
 * the backup a `backing-up` state names.
 */
export async function judgeVolumeState(catalog: Pick<Catalog, 'getBackup'>, state: VolumeFlowState | undefined): Promise<VolumeFlowState | undefined> {
  const settled = stateAsSettled(state);
  if (settled?.status === 'backing-up' && (await backupFlowOver(catalog, settled.backupId))) return undefined;
  return settled;
}
