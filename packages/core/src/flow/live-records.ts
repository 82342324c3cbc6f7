import { SHARED_READERS_OWNER, type BackupReader, type BackupRecord } from '../contracts/records.js';
import { isThisProcess, ownerMayBeAlive, type ProcessOwner } from '../util/process-owner.js';

/**
 * The backup records this process is working on, process-wide: every BackupManager of the
 * process (several may share one catalog) and the archive importer hold the records of their
 * flows here. A flow holds a record's id before it writes the record in a flow status
 * (`creating`, `restoring`, `deleting`) and lets go once its last write of the record has
 * settled, whether that write succeeded or failed. So a record of this process in a flow status
 * that no one holds was left behind (its flow's final write failed): recovery may resolve it at
 * once, without waiting for this process to end.
 *
 * One registry per global object, so two copies of this module loaded in one thread share it.
 * Worker threads have globals of their own: flows must run in the main thread (as Cairn's do; its
 * workers only hash, compress and seal), else this thread's recovery takes their records, which
 * carry the same pid, for abandoned.
 */
const held: Map<string, number> = ((globalThis as Record<symbol, unknown>)[Symbol.for('cairn.live-records')] ??= new Map<string, number>()) as Map<string, number>;

/** Lets go of one hold. Idempotent: a second call does nothing. */
export type LetGo = () => void;

/**
 * Holds `backupId` until the returned function is called. Holds count: an id stays held while
 * any of its holders (overlapping restores of one backup, say) has not let go.
 */
export function holdRecord(backupId: string): LetGo {
  held.set(backupId, (held.get(backupId) ?? 0) + 1);
  let done = false;
  return () => {
    if (done) return;
    done = true;
    const n = held.get(backupId)! - 1;
    if (n === 0) held.delete(backupId);
    else held.set(backupId, n);
  };
}

/** How many holds of this process `backupId` has now. */
export function holdCount(backupId: string): number {
  return held.get(backupId) ?? 0;
}

/** Whether a flow of this process holds `backupId` now. */
export function isRecordHeld(backupId: string): boolean {
  return held.has(backupId);
}

/**
 * Whether someone may still be working on `record` (then recovery leaves it alone): a flow of
 * this process holds it, or its owner is another process that may be alive (`ownerMayBeAlive`);
 * for a `restoring` record with `readers`, one of its readers may be alive (readerMayBeAlive),
 * its `owner` aside. A record this process owns but does not hold is not worked on: its flow
 * ended without its final write. Says nothing else of the record's status; callers ask only of
 * records in a flow status.
 */
export function mayBeWorkedOn(record: Pick<BackupRecord, 'id' | 'owner' | 'status' | 'readers'>): boolean {
  if (isRecordHeld(record.id)) return true;
  const readers = currentReaders(record);
  if (readers) return readers.some((r) => readerMayBeAlive(record.id, r));
  return !!record.owner && !isThisProcess(record.owner) && ownerMayBeAlive(record.owner);
}

/**
 * The readers of a `restoring` record that a newer Cairn read it by: its `owner` agrees with them
 * (the sole reader's, or SHARED_READERS_OWNER for several). Undefined for any other record, also
 * for one an older Cairn made `restoring` (its own owner) while it still carried readers from
 * before (an older Cairn keeps fields it does not know): that restore is judged by its owner.
 */
export function currentReaders(record: Pick<BackupRecord, 'status' | 'owner' | 'readers'>): BackupReader[] | undefined {
  const { readers, owner } = record;
  if (record.status !== 'restoring' || !readers || readers.length === 0 || !owner) return undefined;
  const expected = readers.length === 1 ? readers[0]!.owner : SHARED_READERS_OWNER;
  return sameOwner(owner, expected) ? readers : undefined;
}

/**
 * Every field of ProcessOwner: a field added to it fails to compile here until listed, so that
 * sameOwner compares it too.
 */
const OWNER_FIELDS: { readonly [K in keyof Required<ProcessOwner>]: true } = { host: true, pid: true, startTime: true, bootId: true, pidNamespace: true, machineId: true };

/**
 * Whether `a` and `b` name one owner as written: equal in every field of ProcessOwner, an optional
 * field equal only when both lack it or both carry the same value. A newer Cairn writes the sole
 * reader's owner object itself as the record's owner, so the two agree field by field.
 */
function sameOwner(a: ProcessOwner, b: ProcessOwner): boolean {
  return (Object.keys(OWNER_FIELDS) as Array<keyof ProcessOwner>).every((k) => a[k] === b[k]);
}

/**
 * Whether the process of a reader of backup `backupId` may still read it: this process while a
 * flow of it holds the record, another process while it may be alive.
 */
export function readerMayBeAlive(backupId: string, reader: BackupReader): boolean {
  return isThisProcess(reader.owner) ? isRecordHeld(backupId) : ownerMayBeAlive(reader.owner);
}
