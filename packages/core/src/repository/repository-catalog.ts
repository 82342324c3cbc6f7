import type { BackupFilter, Catalog } from '../contracts/catalog.js';
import type { BackupRecord, VolumeFlowState } from '../contracts/records.js';
import { CairnError, isCairnError } from '../errors.js';
import { matches } from '../memory/memory-catalog.js';
import { decodeDocument, encodeDocument } from './codec.js';
import type { Repository } from './repository.js';

const PREFIX = { backups: 'catalog/backups/', volumes: 'catalog/volumes/' } as const;

/**
 * The BackupManager's records kept in the repository itself (sealed like manifests when the
 * repository is encrypted), so nothing is lost with a local database and any machine that
 * reaches the repository sees the same records. Each record is one object; writes are atomic.
 */
export class RepositoryCatalog implements Catalog {
  constructor(private readonly repo: Repository) {}

  async putBackup(record: BackupRecord): Promise<void> {
    await this.write(PREFIX.backups, record.id, record);
  }

  async getBackup(backupId: string): Promise<BackupRecord> {
    const r = await this.read<BackupRecord>(PREFIX.backups, backupId);
    if (!r) throw new CairnError('NOT_FOUND', `backup ${backupId} not found`, { driver: 'catalog' });
    return r;
  }

  async listBackups(filter: BackupFilter = {}): Promise<BackupRecord[]> {
    const out: BackupRecord[] = [];
    for await (const o of this.repo.store.list(PREFIX.backups)) {
      const r = await this.read<BackupRecord>(PREFIX.backups, o.key.slice(PREFIX.backups.length));
      if (r && matches(r, filter)) out.push(r);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  async deleteBackup(backupId: string): Promise<void> {
    await this.repo.store.delete(PREFIX.backups + backupId);
  }

  async getVolumeState(volumeId: string): Promise<VolumeFlowState | undefined> {
    return this.read<VolumeFlowState>(PREFIX.volumes, volumeId);
  }

  async listVolumeStates(): Promise<VolumeFlowState[]> {
    const out: VolumeFlowState[] = [];
    for await (const o of this.repo.store.list(PREFIX.volumes)) {
      const s = await this.read<VolumeFlowState>(PREFIX.volumes, o.key.slice(PREFIX.volumes.length));
      if (s) out.push(s);
    }
    return out;
  }

  async putVolumeState(state: VolumeFlowState): Promise<void> {
    await this.write(PREFIX.volumes, state.volumeId, state);
  }

  async clearVolumeState(volumeId: string): Promise<void> {
    await this.repo.store.delete(PREFIX.volumes + volumeId);
  }

  private async write(prefix: string, id: string, doc: unknown): Promise<void> {
    await this.repo.store.put(prefix + id, encodeDocument(this.repo.codec, doc, prefix + id));
  }

  /** Reads one record; undefined when absent. `CORRUPT` names a damaged record. */
  private async read<T>(prefix: string, id: string): Promise<T | undefined> {
    let blob: Buffer;
    try {
      blob = await this.repo.store.get(prefix + id);
    } catch (err) {
      if (isCairnError(err) && (err.code === 'NOT_FOUND' || err.code === 'INVALID_INPUT')) return undefined;
      throw err;
    }
    return decodeDocument<T>(this.repo.codec, blob, prefix + id);
  }
}
