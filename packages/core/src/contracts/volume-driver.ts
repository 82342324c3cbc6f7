import type { AttachMode, BlockDevice } from './block-device.js';
import type { BackupRecord } from './records.js';
import type { BackupService, RestoreOptions } from './backup-service.js';
import type { ProgressSink } from './progress.js';

/** Volume status as the driver sees it. The BackupManager overlays its own flow states. */
export type DriverVolumeStatus = 'available' | 'in-use' | 'error';

export interface Volume {
  id: string;
  name: string;
  /** Size in bytes. */
  size: number;
  /** `in-use` while attached read-write by anyone. */
  status: DriverVolumeStatus;
  createdAt: string;
  metadata: Record<string, string>;
  /**
   * What this volume lacks of its driver's capabilities (capabilities are data); absent: nothing.
   * A driver that declares `changedBlockTracking` may hold a volume it cannot track (the qcow2
   * driver: an image in qcow2 version 2): `{ changedBlockTracking: false }`, and createCheckpoint
   * of it fails with `NOT_SUPPORTED`. The flow takes no checkpoint of such a volume: every backup
   * of it reads the whole volume.
   */
  capabilities?: VolumeCapabilities;
}

/** A volume's own capabilities (Volume.capabilities): only what it lacks of its driver's. */
export interface VolumeCapabilities {
  changedBlockTracking?: false;
}

export interface Snapshot {
  id: string;
  volumeId: string;
  name: string;
  /** Size of the volume when the snapshot was taken. */
  size: number;
  createdAt: string;
}

export interface CreateVolumeSpec {
  /** Size in bytes; a positive multiple of 512. */
  size: number;
  /** Display name: 1–255 code points, no control characters (see `assertDisplayName`). Default: none (`''`). */
  name?: string;
  metadata?: Record<string, string>;
}

/** What to attach: a volume or a snapshot of one. */
export type AttachTarget = { kind: 'volume'; id: string } | { kind: 'snapshot'; id: string };

export interface Attachment {
  id: string;
  target: AttachTarget;
  mode: AttachMode;
  device: BlockDevice;
}

/** Capabilities are data: the flow and the conformance suite read them to choose what to call. */
export interface VolumeDriverCapabilities {
  /** createSnapshot/deleteSnapshot/listSnapshots and `attach({kind:'snapshot'})` work. */
  snapshots: boolean;
  /** `changedBlockTracking` is present and `extents({kind:'changed'})` works. */
  changedBlockTracking: boolean;
  /** `quiesce` is present (freeze/thaw around a point-in-time capture). */
  quiesce: boolean;
  /** `flowOverride` is present: backups go through the driver, not through a BlockDevice. */
  flowOverride: boolean;
  /** `attach` itself works. False only for drivers that rely entirely on `flowOverride`. */
  attach: boolean;
  /** Several read-only attachments of one target may exist at once (what conflicts: see `attach`). */
  multiAttachReadOnly: boolean;
  /** `setVolumeMetadata` is present: a volume's key/value metadata can be replaced after its creation. */
  volumeMetadata: boolean;
}

export interface Checkpoint {
  id: string;
  volumeId: string;
  createdAt: string;
}

/**
 * Changed-block tracking. A checkpoint records "now"; later, `extents({kind:'changed', since})`
 * on a device of the same volume (or of a snapshot taken after the checkpoint) lists every range
 * written after the checkpoint was created. Over-reporting is allowed within the device's
 * granularity; missing a written range is a bug.
 */
export interface ChangedBlockTracking {
  /** Starts tracking from now. `NOT_FOUND` for an unknown volume. Not idempotent. */
  createCheckpoint(volumeId: string): Promise<Checkpoint>;
  /** Checkpoints of a volume, oldest first. `NOT_FOUND` for an unknown volume. */
  listCheckpoints(volumeId: string): Promise<Checkpoint[]>;
  /** Stops tracking. Idempotent: an unknown checkpoint of a known volume is not an error. */
  deleteCheckpoint(volumeId: string, checkpointId: string): Promise<void>;
}

/** Freeze/thaw hooks around a point-in-time capture (guest agent, fsfreeze…). */
export interface QuiesceHooks {
  /** Flushes and freezes writers of the volume. `UNAVAILABLE` if the agent cannot be reached. */
  freeze(volumeId: string): Promise<void>;
  /** Thaws what freeze froze. Idempotent. Always called after a successful freeze. */
  thaw(volumeId: string): Promise<void>;
}

export interface FlowBackupContext {
  volume: Volume;
  backup: BackupRecord;
  parent: BackupRecord | undefined;
  service: BackupService;
  signal: AbortSignal;
  progress: ProgressSink;
}

/**
 * Whole-flow overrides, for drivers that cannot expose a BlockDevice (Cinder's VMDK driver:
 * stream-optimized export through a temporary backing VM). Core still owns validation, locks,
 * states and records; the driver owns only the copy.
 */
export interface FlowOverride {
  /** Copies the volume into `service`; returns the service's result. Not idempotent. */
  backupVolume(ctx: FlowBackupContext): Promise<import('./backup-service.js').BackupResult>;
  /** Restores `backup` into the existing volume `volumeId` (already validated by core). */
  restoreBackup(ctx: {
    volume: Volume;
    backup: BackupRecord;
    service: BackupService;
    options: RestoreOptions;
    signal: AbortSignal;
    progress: ProgressSink;
  }): Promise<void>;
}

/**
 * A volume driver reaches volumes' bytes. Methods validate input and fail with the stable codes
 * of CairnError, tagged with the driver's name.
 */
export interface VolumeDriver {
  /** Registry name, e.g. `file`, `qcow2`, `memory`. */
  readonly name: string;
  readonly capabilities: VolumeDriverCapabilities;
  /** Present exactly when `capabilities.changedBlockTracking`. */
  readonly changedBlockTracking?: ChangedBlockTracking;
  /** Present exactly when `capabilities.quiesce`. */
  readonly quiesce?: QuiesceHooks;
  /** Present exactly when `capabilities.flowOverride`. */
  readonly flowOverride?: FlowOverride;

  /** Creates a zero-filled volume. `INVALID_INPUT` for a bad size or name (`assertDisplayName`). Not idempotent. */
  createVolume(spec: CreateVolumeSpec): Promise<Volume>;
  /** Deletes a volume. `NOT_FOUND` if unknown; `BUSY` while attached or while it has snapshots. */
  deleteVolume(volumeId: string): Promise<void>;
  /** Returns a volume. `NOT_FOUND` if unknown. */
  getVolume(volumeId: string): Promise<Volume>;
  /** Lists volumes, ordered by creation. */
  listVolumes(): Promise<Volume[]>;
  /**
   * Grows a volume to `size` bytes. `NOT_FOUND` if unknown; `INVALID_INPUT` when shrinking, and for
   * a size that is not a finite number (NaN, an infinity, not a number at all) or not a multiple of
   * 512 — createVolume's size rule — leaving the volume as it was; `BUSY` while attached.
   */
  extendVolume(volumeId: string, size: number): Promise<Volume>;
  /**
   * Present exactly when `capabilities.volumeMetadata`. Replaces the volume's key/value metadata
   * with `metadata` as a whole (keys it lacks are removed) and resolves with the volume as it now
   * is. Atomic: after a crash or a failure the volume has all of its old metadata or all of the
   * new, never a mix; a failed call leaves the old. `INVALID_INPUT` (nothing changed) unless
   * `metadata` passes `assertVolumeMetadata` (createVolume's rule); `NOT_FOUND` for an unknown
   * volume, also one deleted concurrently (a delete and this call are ordered: the volume never
   * reappears). Works whether or not the volume is attached (metadata is not data; an attach,
   * detach or delete of the volume at the same time, in this or another instance, loses neither
   * change), except that a driver may be stricter and refuse with `BUSY` while another instance
   * or process has the volume open. Idempotent.
   */
  setVolumeMetadata?(volumeId: string, metadata: Record<string, string>): Promise<Volume>;

  /**
   * Takes a crash-consistent snapshot. `NOT_SUPPORTED` without the capability; `NOT_FOUND` if
   * unknown; `INVALID_INPUT` (details.field `name`) for a `name` that assertDisplayName refuses.
   */
  createSnapshot(volumeId: string, name?: string): Promise<Snapshot>;
  /** Deletes a snapshot. `NOT_FOUND` if unknown; `BUSY` while attached. */
  deleteSnapshot(snapshotId: string): Promise<void>;
  /** Snapshots of a volume, oldest first. `NOT_FOUND` for an unknown volume. */
  listSnapshots(volumeId: string): Promise<Snapshot[]>;

  /**
   * Attaches a volume or snapshot. `NOT_FOUND` if unknown.
   *
   * A volume's attachments (`kind: 'volume'`) are one `rw` or any number of `ro` ones
   * (readers–writer), within one driver instance and across the instances and processes that
   * share the volumes: `rw` next to any attachment of the volume, and `ro` next to a `rw` one,
   * fail with `BUSY` and change nothing (no attachment is made; the volume keeps its bytes and
   * status; the attachments held keep working). Several `ro` ones need `multiAttachReadOnly`
   * (else the second is `BUSY` too); a driver whose instances cannot share a volume at all may
   * also refuse `ro` next to another instance's `ro` — stricter, never looser. So a `ro` device
   * reads a volume nobody writes meanwhile: a backup of an `available` volume is point-in-time
   * without a snapshot, and a restore's `rw` attach fails before it writes while anyone reads or
   * writes the volume.
   *
   * Snapshots attach read-only only (`INVALID_INPUT` for `rw`), and their attachments never
   * conflict with their volume's, in either order: a volume attached `rw` can be snapshotted and
   * the snapshot read meanwhile (the backup of an `in-use` volume).
   */
  attach(target: AttachTarget, mode: AttachMode): Promise<Attachment>;
  /** Detaches, flushing a read-write device first. Idempotent: unknown attachment ids succeed. */
  detach(attachmentId: string): Promise<void>;
}
