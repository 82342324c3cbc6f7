import type { ProcessOwner } from '../util/process-owner.js';

/**
 * Records the BackupManager keeps in a Catalog. States follow OpenStack Cinder.
 */

/**
 * creating → available | error; available | error → deleting → (gone) | error_deleting;
 * error_deleting → deleting (a retried delete); available ⇄ restoring. A record `deleting` is not
 * deleted again: its delete runs, or recovery resumes it.
 */
export type BackupStatus = 'creating' | 'available' | 'deleting' | 'error' | 'error_deleting' | 'restoring';

/** Every BackupStatus, for checking a caller's filter (a list by status). */
export const BACKUP_STATUSES: readonly BackupStatus[] = ['creating', 'available', 'restoring', 'deleting', 'error', 'error_deleting'];

/** Flow states the manager lays over a volume's driver status while it works on it. */
export type VolumeFlowStatus = 'backing-up' | 'restoring-backup' | 'error_restoring';

export interface BackupStats {
  /** Logical bytes read from the source. */
  bytesRead: number;
  /** Bytes of data the repository did not have before (before compression). */
  bytesNew: number;
  /** Bytes of data found already stored (deduplicated or taken from the parent). */
  bytesReused: number;
  /** Bytes written to the backend (after compression and encryption, including metadata). */
  bytesStored: number;
  /** Milliseconds the copy took. */
  durationMs: number;
}

export interface BackupRecord {
  id: string;
  name: string;
  description: string;
  volumeId: string;
  volumeName: string;
  /** Size of the volume at backup time, in bytes. */
  size: number;
  status: BackupStatus;
  /** Why the backup is in `error`/`error_deleting`, when it is. */
  failReason?: string;
  /** Name of the backup service holding the data. */
  service: string;
  /** Parent backup for an incremental, else undefined. */
  parentId?: string;
  incremental: boolean;
  /** Changed-block-tracking checkpoint taken at backup time (the next incremental's base). */
  checkpointId?: string;
  /** Volume metadata at backup time. */
  volumeMetadata: Record<string, string>;
  /** Opaque data the service needs to find the backup again (manifest id, object prefix…). */
  serviceData: Record<string, unknown>;
  stats?: BackupStats;
  /**
   * Process working on the record while it is `creating`/`restoring`/`deleting`; recovery leaves
   * live owners alone. While `restoring`, the sole reader's owner, or SHARED_READERS_OWNER when
   * several processes read it (see `readers`).
   */
  owner?: ProcessOwner;
  /**
   * Who reads the backup while it is `restoring` (restores, BackupManager.readBackup): one entry
   * per BackupManager that does (its claims), each added and removed in the record's
   * Catalog.section; the backup is
   * `restoring` while any entry's process may be alive, and back to `available` with the last
   * one. Absent in any other status, and on a `restoring` record an older Cairn wrote (one process
   * reads it: its `owner`, which a newer Cairn does not join). Readers its `owner` disagrees with
   * (carried over by an older Cairn's restore) are not counted: live-records.ts currentReaders.
   */
  readers?: BackupReader[];
  createdAt: string;
  updatedAt: string;
}

/** One BackupManager reading a backup (BackupRecord.readers). */
export interface BackupReader {
  /** The manager's own id (BackupClaims.readerId): several managers of one process each have an entry. */
  id: string;
  /** Its process. */
  owner: ProcessOwner;
  /** When that process began reading. */
  since: string;
}

/**
 * The `owner` of a record `restoring` by several processes: a host no process runs on, so that
 * an older Cairn, which judges the record by `owner` alone and ignores `readers`, takes it for a
 * live owner elsewhere and neither recovers nor deletes it while any of them reads it.
 */
export const SHARED_READERS_OWNER: ProcessOwner = Object.freeze({ host: 'cairn:shared-readers', pid: 0 });

export interface VolumeFlowState {
  volumeId: string;
  status: VolumeFlowStatus;
  /** The status shown before the flow started, restored when it ends. */
  previousStatus: string;
  /** Backup the flow works on. */
  backupId: string;
  since: string;
  /**
   * On a `restoring-backup` state: the reader (BackupRecord.readers) whose restore laid it. Once
   * that reader is gone the state is settled (`error_restoring`, keeping this field), whoever else
   * still reads the backup (flow/reader-leftovers.ts). Absent on other states and on states an
   * older Cairn wrote (judged by their backup's record alone).
   */
  reader?: BackupReader;
}

/**
 * A restore to a new volume's record that it is creating one (Cinder's volume row, written before
 * its backend creates the volume): written before the volume is created, deleted once the volume
 * is settled (restored and handed to the caller, or deleted after a failure). The volume carries
 * `jobId` in its metadata (`cairn.restore-job`), so whoever finds the intent finds the volume,
 * even when its creator died before it learnt the volume's id. An intent whose restore ended or
 * died marks its volumes for deletion (BackupManager.recover: `removedVolumes`).
 */
export interface NewVolumeIntent {
  /** The restore job's id: the intent's key, unique per catalog. */
  jobId: string;
  /** The backup the restore reads (claimed, `restoring`, for as long as the restore runs). */
  backupId: string;
  /** When the intent was recorded. */
  since: string;
  /**
   * The restore's reader (BackupRecord.readers): once it is gone the intent is settled, whoever
   * else still reads the backup (flow/reader-leftovers.ts). Absent on intents an older Cairn wrote.
   */
  reader?: BackupReader;
}
