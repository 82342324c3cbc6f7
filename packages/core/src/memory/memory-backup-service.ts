import { createHash } from 'node:crypto';
import type { BlockDevice } from '../contracts/block-device.js';
import type {
  BackupJob,
  BackupResult,
  BackupService,
  BackupServiceDescription,
  BackupSource,
  DeleteOptions,
  RestoreOptions,
  VerifyOptions,
  VerifyReport,
} from '../contracts/backup-service.js';
import type { BackupRecord } from '../contracts/records.js';
import { CairnError, isCairnError, throwIfAborted } from '../errors.js';
import { chunkRangesOf, indexesIn, mergeRanges } from '../repository/chunk-plan.js';
import { checkExtents } from '../drivers/device-checks.js';
import { isZero } from '../util/zero-bytes.js';

interface StoredBackup {
  id: string;
  volumeId: string;
  size: number;
  parentId?: string;
  /** The record's creation time, which importRecord checks a document against. */
  createdAt: string;
  /** The volume driver's checkpoint taken before this backup read the volume (job.backup's), if any. */
  checkpointId?: string;
  /** Blocks this backup itself holds: data, or null for a block that became zero. */
  blocks: Map<number, Buffer | null>;
  /** SHA-256 of every block of the volume as of this backup ('' for zero). */
  hashes: string[];
  /** Hash of each block in `blocks`, as written; verify compares against it. */
  stored: Map<number, string>;
  vmConfig?: Buffer;
}

const ZERO = '';
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/**
 * The reference backup service, shaped like Cinder's chunked drivers before dedup: a full backup
 * stores every non-zero block; an incremental stores only blocks that differ from its parent, so
 * restore walks the chain and a parent with children cannot be deleted (dependentChains).
 */
export class MemoryBackupService implements BackupService {
  private readonly backups = new Map<string, StoredBackup>();

  constructor(
    readonly name = 'memory',
    /** Block size in bytes. Default 64 KiB. */
    private readonly blockSize = 64 * 1024,
  ) {}

  describe(): BackupServiceDescription {
    return {
      name: this.name,
      capabilities: {
        incremental: true,
        dependentChains: true,
        cascadeDelete: true,
        dedup: false,
        encryption: false,
        changedBlockTracking: true,
        vmConfig: true,
        compression: ['none'],
      },
    };
  }

  async backup(job: BackupJob, source: BackupSource): Promise<BackupResult> {
    const started = Date.now();
    const device = source.device;
    const parent = job.parent ? this.stored(job.parent.id) : undefined;
    if (parent && parent.volumeId !== job.volume.id) {
      throw this.err('INVALID_INPUT', `parent ${parent.id} belongs to another volume`);
    }
    const count = Math.ceil(device.size / this.blockSize);
    const toRead = await this.blocksToRead(source, parent, count);
    const hashes = parent ? parent.hashes.slice(0, count) : [];
    while (hashes.length < count) hashes.push(ZERO);
    const blocks = new Map<number, Buffer | null>();
    const stored = new Map<number, string>();
    let bytesRead = 0;
    let bytesNew = 0;
    // What it reads: whole blocks, the last of the device may be short. Reported first, so a
    // backup with nothing to read still reports a total it reaches.
    const total = toRead.reduce((n, index) => n + Math.min(this.blockSize, device.size - index * this.blockSize), 0);
    job.progress(0, total);
    for (const index of toRead) {
      throwIfAborted(job.signal, this.name);
      const offset = index * this.blockSize;
      const data = Buffer.from(await device.read(offset, Math.min(this.blockSize, device.size - offset)));
      bytesRead += data.length;
      const hash = isZero(data) ? ZERO : sha256(data);
      const before = parent && index < parent.hashes.length ? parent.hashes[index] : ZERO;
      if (!parent || hash !== before) {
        blocks.set(index, hash === ZERO ? null : data);
        if (hash !== ZERO) {
          stored.set(index, hash);
          bytesNew += data.length;
        }
      }
      hashes[index] = hash;
      job.progress(bytesRead, total);
    }
    throwIfAborted(job.signal, this.name);
    this.backups.set(job.backup.id, {
      id: job.backup.id,
      volumeId: job.volume.id,
      size: device.size,
      parentId: parent?.id,
      createdAt: job.backup.createdAt,
      checkpointId: job.backup.checkpointId,
      blocks,
      hashes,
      stored,
      vmConfig: job.vmConfig ? Buffer.from(job.vmConfig) : undefined,
    });
    return {
      serviceData: { blocks: blocks.size },
      stats: { bytesRead, bytesNew, bytesReused: device.size - bytesNew, bytesStored: bytesNew, durationMs: Date.now() - started },
    };
  }

  async restore(backup: BackupRecord, target: BlockDevice, options: RestoreOptions = {}): Promise<void> {
    const leaf = this.stored(backup.id);
    if (target.size < leaf.size) {
      throw this.err('INVALID_INPUT', `target of ${target.size} bytes is smaller than backup ${backup.id} (${leaf.size} bytes)`);
    }
    const chain: StoredBackup[] = [];
    for (let b: StoredBackup | undefined = leaf; b; b = b.parentId ? this.stored(b.parentId) : undefined) chain.unshift(b);
    const count = Math.ceil(leaf.size / this.blockSize);
    for (let index = 0; index < count; index++) {
      throwIfAborted(options.signal, this.name);
      const offset = index * this.blockSize;
      const length = Math.min(this.blockSize, leaf.size - offset);
      let data: Buffer | null = null;
      for (const b of chain) if (b.blocks.has(index)) data = b.blocks.get(index) ?? null;
      // Whole blocks: a block stored shorter (the last block of a smaller parent) reads as zeros
      // past its end, and the target's old bytes there must not survive.
      const written = data ? Math.min(data.length, length) : 0;
      if (data) {
        if (sha256(data) !== leaf.hashes[index]) throw this.err('CORRUPT', `backup ${backup.id}: block ${index} fails its checksum`);
        await target.write(offset, data.subarray(0, written));
      }
      if (written < length && !options.targetIsZeroed) await target.writeZeroes(offset + written, length - written);
      options.progress?.(offset + length, leaf.size);
    }
  }

  async delete(backup: BackupRecord, options: DeleteOptions = {}): Promise<void> {
    if (!this.backups.has(backup.id)) return;
    const children = [...this.backups.values()].filter((b) => b.parentId === backup.id);
    if (children.length > 0 && !options.cascade) {
      throw this.err('CONFLICT', `backup ${backup.id} has ${children.length} dependent backup(s)`);
    }
    for (const child of children) await this.delete({ ...backup, id: child.id }, options);
    this.backups.delete(backup.id);
  }

  async verify(backup?: BackupRecord, options: VerifyOptions = {}): Promise<VerifyReport> {
    const targets = backup ? [this.stored(backup.id)] : [...this.backups.values()];
    const report: VerifyReport = { checked: [], problems: [], bytesChecked: 0 };
    // Blocks of each backup's chain, as verify reads them (a parent's blocks once per child).
    const chain = (b: StoredBackup) => {
      const blocks: [StoredBackup, number, Buffer][] = [];
      for (let p: StoredBackup | undefined = b; p; p = p.parentId ? this.backups.get(p.parentId) : undefined) for (const [index, data] of p.blocks) if (data) blocks.push([p, index, data]);
      return blocks;
    };
    const total = targets.reduce((n, b) => n + chain(b).reduce((m, [, , data]) => m + data.length, 0), 0);
    options.progress?.(0, total);
    for (const b of targets) {
      throwIfAborted(options.signal);
      report.checked.push(b.id);
      try {
        for (let p: StoredBackup | undefined = b; p; p = p.parentId ? this.stored(p.parentId) : undefined) {
          for (const [index, data] of p.blocks) {
            if (!data) continue;
            report.bytesChecked += data.length;
            options.progress?.(report.bytesChecked, total);
            if (sha256(data) !== p.stored.get(index)) throw this.err('CORRUPT', `block ${index} of backup ${p.id} fails its checksum`);
          }
        }
      } catch (err) {
        if (!isCairnError(err)) throw err;
        report.problems.push({ backupId: b.id, code: err.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'CORRUPT', message: err.message });
      }
    }
    return report;
  }

  async exportRecord(backup: BackupRecord): Promise<string> {
    this.stored(backup.id);
    return Buffer.from(JSON.stringify({ format: 'cairn-record/1', service: this.name, record: backup })).toString('base64');
  }

  /**
   * The stored backup is authoritative for what it holds: the record's volumeId, size, parentId,
   * incremental and createdAt are the stored ones, and a document that disagrees on any of them
   * is refused with `INVALID_INPUT` (`details.backupId`, `details.field`), as ChunkedBackupService
   * refuses one that disagrees with its manifest. The checkpointId is the stored one (none when
   * the backup was taken without one): a document's could name a checkpoint taken after the data
   * was read, and an incremental from it would miss changes. The other fields, which this service
   * does not keep, are the document's; the writer's `owner` and a `failReason` are dropped.
   */
  async importRecord(exported: string): Promise<BackupRecord> {
    let parsed: { format?: string; service?: string; record?: BackupRecord };
    try {
      parsed = JSON.parse(Buffer.from(String(exported), 'base64').toString('utf8'));
    } catch (cause) {
      throw new CairnError('INVALID_INPUT', 'exported record is not valid', { driver: this.name, cause });
    }
    if (parsed?.format !== 'cairn-record/1' || typeof parsed.record?.id !== 'string') {
      throw this.err('INVALID_INPUT', 'exported record has an unknown format');
    }
    if (parsed.service !== this.name) throw this.err('INVALID_INPUT', `record belongs to service ${String(parsed.service)}`);
    const b = this.stored(parsed.record.id);
    const held = { volumeId: b.volumeId, size: b.size, parentId: b.parentId, incremental: b.parentId !== undefined, createdAt: b.createdAt };
    const given = parsed.record as unknown as Record<string, unknown>;
    for (const [field, value] of Object.entries(held)) {
      if ((given[field] ?? undefined) !== value) {
        throw new CairnError('INVALID_INPUT', `exported record of backup ${b.id} disagrees with the stored backup on ${field}`, { driver: this.name, details: { backupId: b.id, field } });
      }
    }
    return { ...parsed.record, ...held, checkpointId: b.checkpointId, service: this.name, owner: undefined, failReason: undefined, status: 'available' };
  }

  /** Resolves while `backup.id` is held (nothing is read or checked); `NOT_FOUND` once it is deleted or was never stored. */
  async assertStored(backup: BackupRecord): Promise<void> {
    this.stored(backup.id);
  }

  /** Test hook: flips one stored byte of `backupId`, as disk rot would. */
  corrupt(backupId: string): void {
    for (const data of this.stored(backupId).blocks.values()) {
      if (data) {
        data[0] ^= 0xff;
        return;
      }
    }
  }

  /**
   * Every block, or with changed-block tracking the changed ones plus those the parent does not
   * hold whole: blocks past its end, and its last block when it was short and the volume grew
   * (the parent's hash covers only its short length).
   */
  private async blocksToRead(source: BackupSource, parent: StoredBackup | undefined, count: number): Promise<number[]> {
    const all = Array.from({ length: count }, (_, i) => i);
    if (!parent || !source.changedSince) return all;
    const whole = source.device.size > parent.size ? Math.floor(parent.size / this.blockSize) : parent.hashes.length;
    try {
      const query = { kind: 'changed', since: source.changedSince } as const;
      const changed = checkExtents(source.device, query, await source.device.extents(query));
      return indexesIn(mergeRanges([...chunkRangesOf(changed, this.blockSize), [whole, count]]));
    } catch (err) {
      if (isCairnError(err) && (err.code === 'NOT_FOUND' || err.code === 'NOT_SUPPORTED')) return all;
      throw err;
    }
  }

  private stored(backupId: string): StoredBackup {
    const b = this.backups.get(backupId);
    if (!b) throw this.err('NOT_FOUND', `backup ${backupId} not found in ${this.name}`);
    return b;
  }

  private err(code: CairnError['code'], message: string): CairnError {
    return new CairnError(code, message, { driver: this.name });
  }
}
