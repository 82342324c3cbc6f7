import type { AttachMode, ByteRange, Extent, ExtentQuery } from '../contracts/block-device.js';
import type {
  AttachTarget,
  Attachment,
  ChangedBlockTracking,
  Checkpoint,
  CreateVolumeSpec,
  Snapshot,
  Volume,
  VolumeDriver,
  VolumeDriverCapabilities,
} from '../contracts/volume-driver.js';
import { attachConflict } from '../drivers/attach-rule.js';
import { BaseBlockDevice } from '../drivers/base-block-device.js';
import { CairnError } from '../errors.js';
import { newId, nowIso } from '../util/clock.js';
import { assertDisplayName, assertVolumeMetadata, assertVolumeSize } from '../util/validate.js';
import { PageStore, pagesToExtents } from './page-store.js';

export interface MemoryVolumeDriverOptions {
  /** Driver name in the registry and in errors. Default `memory`. */
  name?: string;
  /** Allocation and change-tracking unit in bytes. Default 4096. */
  pageSize?: number;
}

interface VolumeState {
  info: Volume;
  data: PageStore;
  /** Pages written since each checkpoint. */
  dirty: Map<string, { checkpoint: Checkpoint; pages: Set<number> }>;
}

interface SnapshotState {
  info: Snapshot;
  data: PageStore;
  /** Each checkpoint's dirty pages as they were when the snapshot was taken. */
  dirty: Map<string, Set<number>>;
}

/**
 * The reference volume driver: exact, in memory, with snapshots and changed-block tracking.
 * Used to test core and the conformance suite itself. A volume's attachments are one read-write
 * or any number of read-only ones (see assertNoConflict).
 */
export class MemoryVolumeDriver implements VolumeDriver {
  readonly name: string;
  readonly capabilities: VolumeDriverCapabilities = {
    snapshots: true,
    changedBlockTracking: true,
    quiesce: false,
    flowOverride: false,
    attach: true,
    multiAttachReadOnly: true,
    volumeMetadata: true,
  };
  readonly changedBlockTracking: ChangedBlockTracking;
  private readonly pageSize: number;
  private readonly volumes = new Map<string, VolumeState>();
  private readonly snapshots = new Map<string, SnapshotState>();
  private readonly attachments = new Map<string, Attachment>();

  constructor(options: MemoryVolumeDriverOptions = {}) {
    this.name = options.name ?? 'memory';
    this.pageSize = options.pageSize ?? 4096;
    this.changedBlockTracking = {
      createCheckpoint: async (volumeId) => {
        const v = this.volume(volumeId);
        const checkpoint: Checkpoint = { id: newId(), volumeId, createdAt: nowIso() };
        v.dirty.set(checkpoint.id, { checkpoint, pages: new Set() });
        return checkpoint;
      },
      listCheckpoints: async (volumeId) => [...this.volume(volumeId).dirty.values()].map((d) => ({ ...d.checkpoint })),
      deleteCheckpoint: async (volumeId, checkpointId) => {
        this.volume(volumeId).dirty.delete(checkpointId);
      },
    };
  }

  async createVolume(spec: CreateVolumeSpec): Promise<Volume> {
    assertVolumeSize(spec?.size, this.name);
    if (spec.name !== undefined) assertDisplayName(spec.name, 'name', this.name);
    if (spec.metadata !== undefined) assertVolumeMetadata(spec.metadata, 'metadata', this.name);
    const info: Volume = {
      id: newId(),
      name: spec.name ?? '',
      size: spec.size,
      status: 'available',
      createdAt: nowIso(),
      metadata: { ...(spec.metadata ?? {}) },
    };
    this.volumes.set(info.id, { info, data: new PageStore(spec.size, this.pageSize), dirty: new Map() });
    return { ...info };
  }

  async deleteVolume(volumeId: string): Promise<void> {
    const v = this.volume(volumeId);
    if (this.attachmentsOf(volumeId).length > 0) throw this.err('BUSY', `volume ${volumeId} is attached`);
    if ([...this.snapshots.values()].some((s) => s.info.volumeId === volumeId)) {
      throw this.err('BUSY', `volume ${volumeId} has snapshots`);
    }
    this.volumes.delete(v.info.id);
  }

  async getVolume(volumeId: string): Promise<Volume> {
    const v = this.volume(volumeId);
    return { ...v.info, status: this.statusOf(volumeId), metadata: { ...v.info.metadata } };
  }

  async listVolumes(): Promise<Volume[]> {
    return Promise.all([...this.volumes.keys()].map((id) => this.getVolume(id)));
  }

  /** Replaces the metadata in one assignment (the contract's atomicity); allowed while attached. */
  async setVolumeMetadata(volumeId: string, metadata: Record<string, string>): Promise<Volume> {
    assertVolumeMetadata(metadata, 'metadata', this.name);
    const v = this.volume(volumeId);
    v.info.metadata = { ...metadata };
    return { ...v.info, status: this.statusOf(volumeId), metadata: { ...metadata } };
  }

  async extendVolume(volumeId: string, size: number): Promise<Volume> {
    const v = this.volume(volumeId);
    assertVolumeSize(size, this.name);
    if (size < v.info.size) throw this.err('INVALID_INPUT', `cannot shrink volume ${volumeId} from ${v.info.size} to ${size}`);
    if (this.attachmentsOf(volumeId).length > 0) throw this.err('BUSY', `volume ${volumeId} is attached`);
    v.info.size = size;
    v.data.grow(size);
    return this.getVolume(volumeId);
  }

  async createSnapshot(volumeId: string, name?: string): Promise<Snapshot> {
    if (name !== undefined) assertDisplayName(name, 'name', this.name);
    const v = this.volume(volumeId);
    const info: Snapshot = { id: newId(), volumeId, name: name ?? '', size: v.info.size, createdAt: nowIso() };
    const dirty = new Map([...v.dirty].map(([id, d]) => [id, new Set(d.pages)]));
    this.snapshots.set(info.id, { info, data: v.data.clone(), dirty });
    return { ...info };
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    const s = this.snapshot(snapshotId);
    if ([...this.attachments.values()].some((a) => a.target.kind === 'snapshot' && a.target.id === snapshotId)) {
      throw this.err('BUSY', `snapshot ${snapshotId} is attached`);
    }
    this.snapshots.delete(s.info.id);
  }

  async listSnapshots(volumeId: string): Promise<Snapshot[]> {
    this.volume(volumeId);
    return [...this.snapshots.values()].filter((s) => s.info.volumeId === volumeId).map((s) => ({ ...s.info }));
  }

  async attach(target: AttachTarget, mode: AttachMode): Promise<Attachment> {
    if (mode !== 'ro' && mode !== 'rw') throw this.err('INVALID_INPUT', `unknown attach mode ${String(mode)}`);
    const id = newId();
    let device: MemoryBlockDevice;
    if (target?.kind === 'volume') {
      const v = this.volume(target.id);
      this.assertNoConflict(target.id, mode);
      device = new MemoryBlockDevice(this.name, v.data, mode, this.pageSize, {
        markDirty: (pages) => {
          for (const d of v.dirty.values()) for (const p of pages) d.pages.add(p);
        },
        dirtySince: (cp) => v.dirty.get(cp)?.pages,
      });
    } else if (target?.kind === 'snapshot') {
      const s = this.snapshot(target.id);
      if (mode === 'rw') throw this.err('INVALID_INPUT', `snapshot ${target.id} can only be attached read-only`);
      device = new MemoryBlockDevice(this.name, s.data, 'ro', this.pageSize, {
        markDirty: () => {},
        dirtySince: (cp) => s.dirty.get(cp),
      });
    } else {
      throw this.err('INVALID_INPUT', `unknown attach target ${JSON.stringify(target)}`);
    }
    const attachment: Attachment = { id, target: { ...target }, mode, device };
    this.attachments.set(id, attachment);
    return attachment;
  }

  async detach(attachmentId: string): Promise<void> {
    const a = this.attachments.get(attachmentId);
    if (!a) return;
    this.attachments.delete(attachmentId);
    await a.device.close();
  }

  /**
   * A volume has one read-write attachment or any number of read-only ones (readers–writer, as
   * the file driver's locks between processes): a conflicting attach fails with `BUSY`. So a
   * read-only device reads a volume that nobody writes meanwhile, which is what makes a backup of
   * an available volume point-in-time (BackupSource.device) without a snapshot.
   */
  private assertNoConflict(volumeId: string, mode: AttachMode): void {
    const conflict = attachConflict(volumeId, mode, this.attachmentsOf(volumeId).map((a) => a.mode));
    if (conflict) throw this.err('BUSY', conflict);
  }

  private attachmentsOf(volumeId: string): Attachment[] {
    return [...this.attachments.values()].filter((a) => a.target.kind === 'volume' && a.target.id === volumeId);
  }

  private statusOf(volumeId: string): Volume['status'] {
    return this.attachmentsOf(volumeId).some((a) => a.mode === 'rw') ? 'in-use' : 'available';
  }

  private volume(volumeId: string): VolumeState {
    const v = typeof volumeId === 'string' ? this.volumes.get(volumeId) : undefined;
    if (!v) throw this.err('NOT_FOUND', `volume ${String(volumeId)} not found`);
    return v;
  }

  private snapshot(snapshotId: string): SnapshotState {
    const s = typeof snapshotId === 'string' ? this.snapshots.get(snapshotId) : undefined;
    if (!s) throw this.err('NOT_FOUND', `snapshot ${String(snapshotId)} not found`);
    return s;
  }

  private err(code: CairnError['code'], message: string): CairnError {
    return new CairnError(code, message, { driver: this.name });
  }
}

interface DirtyTracking {
  markDirty(pages: number[]): void;
  dirtySince(checkpointId: string): Set<number> | undefined;
}

class MemoryBlockDevice extends BaseBlockDevice {
  constructor(
    driver: string,
    private readonly data: PageStore,
    mode: AttachMode,
    pageSize: number,
    private readonly tracking: DirtyTracking,
  ) {
    super(driver, data.size, mode, pageSize);
  }

  protected async _read(offset: number, into: Buffer): Promise<void> {
    this.data.read(offset, into);
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    this.tracking.markDirty(this.data.write(offset, data));
  }

  protected async _writeZeroes(offset: number, length: number): Promise<void> {
    this.tracking.markDirty(this.data.write(offset, null, length));
  }

  protected async _flush(): Promise<void> {}

  protected async _extents(query: ExtentQuery, _range: ByteRange): Promise<Extent[]> {
    if (query.kind === 'allocated') return this.data.allocated();
    const pages = this.tracking.dirtySince(query.since);
    if (!pages) throw new CairnError('NOT_FOUND', `checkpoint ${query.since} not found`, { driver: this.driverName });
    return pagesToExtents(pages, this.extentGranularity, this.size);
  }

  protected async _close(): Promise<void> {}
}
