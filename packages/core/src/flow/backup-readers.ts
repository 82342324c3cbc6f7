import { SHARED_READERS_OWNER, type BackupReader, type BackupRecord } from '../contracts/records.js';
import { nowIso } from '../util/clock.js';
import { currentOwner, isThisProcess } from '../util/process-owner.js';
import { currentReaders, readerMayBeAlive } from './live-records.js';

/**
 * The cross-process side of restore claims (BackupRecord.readers): who reads a backup, kept in
 * its record. A manager's BackupClaims counts its own claims; the manager (`readerId`:
 * BackupClaims.readerId) has one entry while it has any. Every function here returns the record
 * to write, and is called in the record's section (BackupClaims.exclusive) with the record as
 * read there.
 */

/** The record `restoring` with reader `readerId` of this process, and the other readers that may be alive. */
export function withReader(record: BackupRecord, readerId: string): BackupRecord {
  const now = nowIso();
  return readBy(record, [...othersAlive(record, readerId), { id: readerId, owner: currentOwner(), since: now }], now);
}

/** The record without reader `readerId` nor readers that are gone: `available` when none is left. */
export function withoutReader(record: BackupRecord, readerId: string): BackupRecord {
  return readBy(record, othersAlive(record, readerId), nowIso());
}

/** The record without the entries of readers that are gone (this process's entries stay while a flow of it holds the record). */
export function withLiveReaders(record: BackupRecord): BackupRecord {
  return readBy(record, (currentReaders(record) ?? []).filter((r) => readerMayBeAlive(record.id, r)), nowIso());
}

/** Whether the `restoring` record names reader `readerId` of this process. */
export function hasReader(record: BackupRecord, readerId: string): boolean {
  return (currentReaders(record) ?? []).some((r) => r.id === readerId && isThisProcess(r.owner));
}

/** Whether the record names a reader that is gone (recovery drops it: withLiveReaders). */
export function hasDeadReaders(record: BackupRecord): boolean {
  return (currentReaders(record) ?? []).some((r) => !readerMayBeAlive(record.id, r));
}

/**
 * The readers but `readerId` of this process that may be alive. Only the readers of a `restoring`
 * record whose owner agrees with them count (currentReaders): others were carried over by a
 * writer that knows nothing of them (an older Cairn's reset or restore, a record exported and
 * imported elsewhere).
 */
function othersAlive(record: BackupRecord, readerId: string): BackupReader[] {
  return (currentReaders(record) ?? []).filter((r) => !(r.id === readerId && isThisProcess(r.owner)) && readerMayBeAlive(record.id, r));
}

/**
 * `restoring` read by `readers` (owner: the sole reader, or SHARED_READERS_OWNER for several, as
 * an older Cairn must see a live owner), or `available` with neither owner nor readers when none.
 */
function readBy(record: BackupRecord, readers: BackupReader[], now: string): BackupRecord {
  if (readers.length === 0) return { ...record, status: 'available', owner: undefined, readers: undefined, updatedAt: now };
  const owner = readers.length === 1 ? readers[0]!.owner : { ...SHARED_READERS_OWNER };
  return { ...record, status: 'restoring', owner, readers, updatedAt: now };
}
