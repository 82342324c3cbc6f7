import type { BackupFilter, BackupPage, BackupPageQuery, Catalog, CatalogPutOptions, SectionOptions } from '../contracts/catalog.js';
import type { BackupRecord, NewVolumeIntent, VolumeFlowState } from '../contracts/records.js';
import { CairnError } from '../errors.js';
import { backupOrder, checkPageQuery, markerRecord, pageOf } from '../util/backup-page.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { ordinal } from '../util/order.js';
import { withCanonicalTimes } from '../util/record-times.js';

const clone = <T>(v: T): T => structuredClone(v);

/** Records in memory. Enough for tests and single-process use; lost with the process. */
export class MemoryCatalog implements Catalog {
  private readonly backups = new Map<string, BackupRecord>();
  private readonly volumeStates = new Map<string, VolumeFlowState>();
  private readonly intents = new Map<string, NewVolumeIntent>();
  private readonly sections = new KeyedMutex();

  async putBackup(given: BackupRecord, options: CatalogPutOptions = {}): Promise<void> {
    const record = withCanonicalTimes(given);
    if (options.ifAbsent && this.backups.has(record.id)) throw new CairnError('ALREADY_EXISTS', `backup ${record.id} already exists`, { driver: 'catalog' });
    this.backups.set(record.id, clone(record));
  }

  async getBackup(backupId: string): Promise<BackupRecord> {
    const r = this.backups.get(backupId);
    if (!r) throw new CairnError('NOT_FOUND', `backup ${backupId} not found`, { driver: 'catalog' });
    return clone(r);
  }

  async listBackups(filter: BackupFilter = {}): Promise<BackupRecord[]> {
    return [...this.backups.values()]
      .filter((r) => matches(r, filter))
      .sort(byCreation)
      .map(clone);
  }

  async listBackupPage(query: BackupPageQuery = {}): Promise<BackupPage> {
    const { limit, sort } = checkPageQuery(query);
    const marker = await markerRecord((id) => this.getBackup(id), query.marker);
    const order = backupOrder(sort);
    const page = pageOf([...this.backups.values()].filter((r) => matches(r, query)).sort(order), order, marker, limit);
    return { ...page, backups: page.backups.map(clone) };
  }

  async latestBackup(filter: BackupFilter & { volumeId: string }): Promise<BackupRecord | undefined> {
    return (await this.listBackups(filter)).at(-1);
  }

  async deleteBackup(backupId: string): Promise<void> {
    this.backups.delete(backupId);
  }

  /** Sections of every user of this catalog object (it lives in one process). */
  /** `options` (SectionOptions) mean nothing here: this catalog writes no store. */
  section<T>(backupId: string, fn: () => Promise<T>, signal?: AbortSignal, _options?: SectionOptions): Promise<T> {
    return this.sections.run(backupId, fn, signal);
  }

  async getVolumeState(volumeId: string): Promise<VolumeFlowState | undefined> {
    const s = this.volumeStates.get(volumeId);
    return s && clone(s);
  }

  async listVolumeStates(): Promise<VolumeFlowState[]> {
    return [...this.volumeStates.values()].map(clone);
  }

  async putVolumeState(state: VolumeFlowState, options: CatalogPutOptions = {}): Promise<void> {
    if (options.ifAbsent && this.volumeStates.has(state.volumeId)) {
      throw new CairnError('ALREADY_EXISTS', `volume ${state.volumeId} already has a flow state`, { driver: 'catalog' });
    }
    this.volumeStates.set(state.volumeId, clone(state));
  }

  async clearVolumeState(volumeId: string): Promise<void> {
    this.volumeStates.delete(volumeId);
  }

  async putNewVolumeIntent(intent: NewVolumeIntent, options: CatalogPutOptions = {}): Promise<void> {
    if (options.ifAbsent && this.intents.has(intent.jobId)) {
      throw new CairnError('ALREADY_EXISTS', `restore job ${intent.jobId} already has a new-volume intent`, { driver: 'catalog' });
    }
    this.intents.set(intent.jobId, clone(intent));
  }

  async getNewVolumeIntent(jobId: string): Promise<NewVolumeIntent | undefined> {
    const i = this.intents.get(jobId);
    return i && clone(i);
  }

  async listNewVolumeIntents(): Promise<NewVolumeIntent[]> {
    return [...this.intents.values()].map(clone);
  }

  async deleteNewVolumeIntent(jobId: string): Promise<void> {
    this.intents.delete(jobId);
  }
}

/** The order of catalog listings: creation time, then id (both ordinal). */
export const byCreation = (a: BackupRecord, b: BackupRecord): number => ordinal(a.createdAt, b.createdAt) || ordinal(a.id, b.id);

/** True when `record` matches every field set in `filter`. */
export function matches(record: BackupRecord, filter: BackupFilter): boolean {
  return (
    (filter.volumeId === undefined || record.volumeId === filter.volumeId) &&
    (filter.status === undefined || record.status === filter.status) &&
    (filter.parentId === undefined || record.parentId === filter.parentId) &&
    (filter.service === undefined || record.service === filter.service) &&
    (filter.name === undefined || record.name === filter.name)
  );
}
