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
  /** Process working on the record while it is `creating`/`restoring`/`deleting`; recovery leaves live owners alone. */
  owner?: ProcessOwner;
  createdAt: string;
  updatedAt: string;
}

export interface VolumeFlowState {
  volumeId: string;
  status: VolumeFlowStatus;
  /** The status shown before the flow started, restored when it ends. */
  previousStatus: string;
  /** Backup the flow works on. */
  backupId: string;
  since: string;
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
}
