import type { BackupRecord, BackupStatus, VolumeFlowState } from './records.js';

export interface BackupFilter {
  volumeId?: string;
  status?: BackupStatus;
  parentId?: string;
  /** The backup service (target) name. */
  service?: string;
}

/**
 * Where the BackupManager keeps records. Writes are atomic per record.
 */
export interface Catalog {
  /** Inserts or replaces a record. Idempotent. */
  putBackup(record: BackupRecord): Promise<void>;
  /** `NOT_FOUND` if unknown. */
  getBackup(backupId: string): Promise<BackupRecord>;
  /** Records matching `filter`, oldest first (by creation time, then id). */
  listBackups(filter?: BackupFilter): Promise<BackupRecord[]>;
  /**
   * The newest record of a volume matching `filter` (what listBackups would list last), or
   * undefined. Catalogs answer it without reading every record where they can.
   */
  latestBackup(filter: BackupFilter & { volumeId: string }): Promise<BackupRecord | undefined>;
  /** Idempotent. */
  deleteBackup(backupId: string): Promise<void>;
  /** The flow state laid over a volume, if any. */
  getVolumeState(volumeId: string): Promise<VolumeFlowState | undefined>;
  listVolumeStates(): Promise<VolumeFlowState[]>;
  /** Inserts or replaces. Idempotent. */
  putVolumeState(state: VolumeFlowState): Promise<void>;
  /** Idempotent. */
  clearVolumeState(volumeId: string): Promise<void>;
}
