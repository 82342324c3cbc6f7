import type { BlockDevice } from './block-device.js';
import type { Volume } from './volume-driver.js';
import type { BackupRecord, BackupStats } from './records.js';
import type { ProgressSink } from './progress.js';

export type CompressionAlgorithm = 'zstd' | 'lz4' | 'gzip' | 'none';

/** Capabilities are data: the flow and the conformance suite read them. */
export interface BackupServiceCapabilities {
  /** Incremental backups (with a parent) are accepted. */
  incremental: boolean;
  /** An incremental needs its parent to restore; deleting a parent with children is `CONFLICT`. */
  dependentChains: boolean;
  /** `delete(…, {cascade:true})` deletes a backup together with its dependents. */
  cascadeDelete: boolean;
  /** Identical data is stored once across backups and volumes. */
  dedup: boolean;
  /** Data can be encrypted at rest. */
  encryption: boolean;
  /** Reads only changed extents when the source offers changed-block tracking. */
  changedBlockTracking: boolean;
  /** A VM configuration blob can be stored with a backup. */
  vmConfig: boolean;
  /** Compression algorithms offered, default first; `['none']` when none. */
  compression: CompressionAlgorithm[];
}

export interface BackupServiceDescription {
  name: string;
  capabilities: BackupServiceCapabilities;
}

export interface BackupJob {
  /** The record being created (status `creating`); its id names the backup. */
  backup: BackupRecord;
  /** The parent backup, for an incremental. */
  parent?: BackupRecord;
  volume: Volume;
  /** VM configuration to keep with the backup (e.g. libvirt domain XML, OVF). */
  vmConfig?: Uint8Array;
  signal: AbortSignal;
  progress: ProgressSink;
}

export interface BackupSource {
  /** The point-in-time device to read; never written. */
  device: BlockDevice;
  /**
   * Checkpoint of the parent backup. When set, the service may read only
   * `device.extents({kind:'changed', since})` and take the rest from the parent; if that call
   * fails with NOT_FOUND/NOT_SUPPORTED, it must fall back to reading everything.
   */
  changedSince?: string;
}

export interface BackupResult {
  /** Opaque data stored in the record and handed back on restore/delete/verify. */
  serviceData: Record<string, unknown>;
  stats: BackupStats;
}

export interface RestoreOptions {
  signal?: AbortSignal;
  progress?: ProgressSink;
  /** The target is known to read as zeros (fresh volume): zero chunks need not be written. */
  targetIsZeroed?: boolean;
}

export interface DeleteOptions {
  /** Also delete backups that depend on this one (requires `cascadeDelete`). */
  cascade?: boolean;
}

export interface VerifyProblem {
  /**
   * Backup the problem breaks. Absent (since 2026-12) for damage a verify of every backup found
   * that breaks none of them but is still the store's to repair, e.g. an index object that cannot
   * be read (which a repository's GC refuses to run over): reported only when `verify` is called
   * without a backup, never in a verify of one backup. Consumers that name backups must allow it.
   */
  backupId?: string;
  code: 'CORRUPT' | 'NOT_FOUND';
  message: string;
  /** What the message says, for programs (each part present when the problem has that kind of damage; absent from services that give none). */
  details?: VerifyProblemDetails;
}

/** Structured parts of a VerifyProblem: the first of each kind, and counts (never lists that grow with the damage). */
export interface VerifyProblemDetails {
  /**
   * The first chunk of the backup (in chunk order) that fails its checks or is missing, the pack of
   * the copy the index resolves it to (absent when the index names none), and how many of the
   * backup's distinct chunks are bad or missing.
   */
  badChunk?: { chunkId: string; pack?: string; count: number };
  /**
   * The first place of the backup that holds a chunk of another length: its byte offset in the
   * volume, the length the place needs and the chunk's, and how many such places the backup has.
   */
  misplacedChunk?: { chunkId: string; offset: number; expectedLength: number; actualLength: number; count: number };
  /** A chunk (breaking no backup) whose copies in `packs` fail while another copy reads well (no backupId). */
  damagedCopy?: { chunkId: string; packs: string[] };
  /** An index object that cannot be read (its id, as in `index/<id>`), when it breaks no backup (no backupId). */
  indexObject?: string;
}

export interface VerifyOptions {
  /**
   * Cancels the verify: it rejects with `CANCELLED` unless it had already checked everything. A
   * verify that resolves has checked every backup it names in `checked` whole: a cancel never
   * turns into a partial report (callers take a resolved report as the verify's outcome).
   */
  signal?: AbortSignal;
  progress?: ProgressSink;
}

export interface VerifyReport {
  /** Backups checked. */
  checked: string[];
  /** Empty when everything checked is intact. */
  problems: VerifyProblem[];
  /** Logical bytes read and checked. */
  bytesChecked: number;
}

/**
 * A backup service stores backups somewhere. Every method fails with CairnError codes tagged with
 * the service's name.
 */
export interface BackupService {
  readonly name: string;
  describe(): BackupServiceDescription;
  /**
   * Copies `source.device` into a new backup named by `job.backup.id`. On failure or cancel
   * (`CANCELLED`) nothing that restore or list would see is left behind. `INVALID_INPUT` for an
   * incremental without the capability (`NOT_SUPPORTED`) or a parent of another volume.
   * Resolving commits the backup: a cancel that arrives after it is too late, and the flow
   * records the backup `available` (so check `job.signal` before committing, not after).
   */
  backup(job: BackupJob, source: BackupSource): Promise<BackupResult>;
  /**
   * Writes the backup's bytes to `target` (size ≥ backup size, else `INVALID_INPUT`), byte-exact.
   * `NOT_FOUND` if the data is gone; `CORRUPT` if it fails its checks — never wrong bytes.
   */
  restore(backup: BackupRecord, target: BlockDevice, options?: RestoreOptions): Promise<void>;
  /**
   * Deletes a backup's data. Idempotent. With dependent chains, a backup that others depend on
   * is refused with `CONFLICT` unless `cascade` (then `NOT_SUPPORTED` without `cascadeDelete`).
   */
  delete(backup: BackupRecord, options?: DeleteOptions): Promise<void>;
  /**
   * Reads and checks one backup, or every backup the service holds when `backup` is omitted.
   * `progress`, when given, receives logical bytes checked and to check (monotonic; the last call
   * has done === total unless chunks could not be read).
   */
  verify(backup?: BackupRecord, options?: VerifyOptions): Promise<VerifyReport>;
  /** Serializes a record so another deployment reaching the same storage can import it. */
  exportRecord(backup: BackupRecord): Promise<string>;
  /**
   * Parses an exported record and checks the data is reachable. The stored data is authoritative:
   * the returned record's volumeId, size, parentId, incremental and createdAt (and whatever else
   * the service keeps of the backup) are the stored backup's, and a document that disagrees with
   * them on any of the five is refused with `INVALID_INPUT` (`details.backupId`, `details.field`),
   * as a stale or altered document. `INVALID_INPUT` also for a malformed or foreign record,
   * `NOT_FOUND` when the backup's manifest (or what the service keeps in its place) is gone; the
   * data it names need not be read (verify does). Returns the record with status `available` and
   * no `owner`.
   */
  importRecord(exported: string): Promise<BackupRecord>;
  /**
   * Optional: resolves while the backup's data is still stored, `NOT_FOUND` once it is gone (or
   * was never stored). The backup is the one `backup.id` names: the record may be a catalog's,
   * with a target name and labels of its own. A presence check only (damaged data may pass),
   * cheaper than importRecord (which reads and checks what is stored):
   * importRecord's flow asks it again once the record is written, and falls back to importRecord
   * of the same document without it.
   */
  assertStored?(backup: BackupRecord): Promise<void>;
  /** Releases connections and workers. Idempotent. */
  close?(): Promise<void>;
}
