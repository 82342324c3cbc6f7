import type { BackupRecord, BackupStatus, NewVolumeIntent, VolumeFlowState } from './records.js';

/** How a Catalog.section is taken. */
export interface SectionOptions {
  /** The section belongs to an operation that frees space (a backup's delete): see Catalog.section. */
  freesSpace?: boolean;
}

export interface BackupFilter {
  volumeId?: string;
  status?: BackupStatus;
  parentId?: string;
  /** The backup service (target) name. */
  service?: string;
  /** The backup's name, exactly (Cinder's `name` filter). */
  name?: string;
}

/** What a backup listing may be sorted by (Cinder's `sort` keys, in Cairn's field names). */
export type BackupSortKey = 'createdAt' | 'updatedAt' | 'id' | 'name' | 'status' | 'size' | 'volumeId';

/** One key of a listing's order: `asc` smallest first (strings ordinal, `size` numeric). */
export interface BackupSort {
  key: BackupSortKey;
  dir: 'asc' | 'desc';
}

/**
 * One page of a backup listing (Cinder's `limit`, `marker`, `sort`): the records matching the
 * filter, in `sort` order, that come after the marker, at most `limit` of them.
 */
export interface BackupPageQuery extends BackupFilter {
  /**
   * Keys in order of precedence, each key at most once. `createdAt` and then `id` are added
   * where absent, in the direction of the first key (as Cinder does), so the order is total and
   * pages never repeat or skip a record while the records do not change. Default: oldest first
   * (`createdAt` asc, `id` asc), listBackups' order.
   */
  sort?: readonly BackupSort[];
  /**
   * The id of a backup (usually the last of the previous page): the page starts after where that
   * record sorts, whether or not it matches the filter. `NOT_FOUND` when no backup has that id
   * (one deleted since: start the listing over).
   */
  marker?: string;
  /** At most this many records: a whole number from 1 to MAX_BACKUP_PAGE_LIMIT. Default: no limit. */
  limit?: number;
}

export interface BackupPage {
  backups: BackupRecord[];
  /** The marker of the next page (the last record's id) when more records follow; else absent. */
  next?: string;
}

export interface CatalogPutOptions {
  /**
   * Write only when no record (flow state, intent) of that id exists, else fail with `ALREADY_EXISTS`
   * and write nothing: of concurrent such writes of one id, by any processes sharing the catalog,
   * exactly one succeeds. A catalog over an object store is as atomic as its store's
   * `put(…, {ifAbsent})` (capability `atomicIfAbsent`). Default false: insert or replace.
   */
  ifAbsent?: boolean;
}

/**
 * Where the BackupManager keeps records. Writes are atomic per record.
 */
export interface Catalog {
  /**
   * Inserts or replaces a record (see `options.ifAbsent`). Idempotent without ifAbsent. Its
   * createdAt and updatedAt are stored in `toISOString`'s form (UTC, milliseconds), whatever
   * ISO-8601 form with a zone they come in (`2026-12-07T02:00:00+01:00` is stored
   * `2026-12-07T01:00:00.000Z`), so that listings, pages and markers order records by time in
   * every catalog; `INVALID_INPUT` (`details.field`: `createdAt` or `updatedAt`), nothing written,
   * for a time that is no ISO-8601 date-time with a zone.
   */
  putBackup(record: BackupRecord, options?: CatalogPutOptions): Promise<void>;
  /** `NOT_FOUND` if unknown. */
  getBackup(backupId: string): Promise<BackupRecord>;
  /** Records matching `filter`, oldest first (by creation time, then id). */
  listBackups(filter?: BackupFilter): Promise<BackupRecord[]>;
  /**
   * One page of the records matching `query` (BackupPageQuery). `INVALID_INPUT` (`details.field`:
   * `limit`, `sort`) for a limit that is not a whole number from 1 to MAX_BACKUP_PAGE_LIMIT, an
   * unknown sort key or direction, a key given twice; `NOT_FOUND` (`details.field: 'marker'`) for
   * a marker that names no backup. Catalogs read no more records than the filter needs where they
   * can (a volume's records only, with `volumeId`).
   */
  listBackupPage(query?: BackupPageQuery): Promise<BackupPage>;
  /**
   * The newest record of a volume matching `filter` (what listBackups would list last), or
   * undefined. Catalogs answer it without reading every record where they can.
   */
  latestBackup(filter: BackupFilter & { volumeId: string }): Promise<BackupRecord | undefined>;
  /** Idempotent. */
  deleteBackup(backupId: string): Promise<void>;
  /**
   * Runs `fn` while no other section on `backupId` runs, in any process sharing this catalog, and
   * resolves or rejects as `fn` does: how a read-check-write of one record (a delete's check and
   * its move to `deleting`, a restore's move to `restoring`) is made atomic against every other
   * such section of that record. Sections of one backup never nest; a section of a parent may run
   * sections of its children, never the reverse. A section waits for one running elsewhere: a
   * holder that dies frees it (on its host at once, elsewhere within the catalog's bound: the
   * repository's catalog, 30 s). It rejects with `CANCELLED` when `signal` aborts while it waits
   * (once fn runs, the signal is fn's business), and with the catalog's errors (`UNAVAILABLE`)
   * when it cannot be taken. A catalog whose sections can lapse (a lock that could not be
   * refreshed in time) refuses fn's writes with `BUSY` from then on, writing nothing.
   * `options.freesSpace`: the section belongs to an operation that frees space (a backup's
   * delete), so a catalog kept on a store with a space reserve may spend it for what taking the
   * section writes (ObjectStore PutOptions.spendReserve); other catalogs ignore it.
   */
  section<T>(backupId: string, fn: () => Promise<T>, signal?: AbortSignal, options?: SectionOptions): Promise<T>;
  /** The flow state laid over a volume, if any. */
  getVolumeState(volumeId: string): Promise<VolumeFlowState | undefined>;
  listVolumeStates(): Promise<VolumeFlowState[]>;
  /**
   * Inserts or replaces a volume's flow state (see `options.ifAbsent`: how a flow begins on a
   * volume that no other flow, in any process, may begin on meanwhile). Idempotent without ifAbsent.
   */
  putVolumeState(state: VolumeFlowState, options?: CatalogPutOptions): Promise<void>;
  /** Idempotent. */
  clearVolumeState(volumeId: string): Promise<void>;
  /**
   * Records a restore's intent to create a new volume (NewVolumeIntent), keyed by its `jobId`
   * (see `options.ifAbsent`). Intents are kept apart from backups and volume states: no listing
   * of those holds one. Idempotent without ifAbsent.
   */
  putNewVolumeIntent(intent: NewVolumeIntent, options?: CatalogPutOptions): Promise<void>;
  /** The intent of restore job `jobId`, or undefined. */
  getNewVolumeIntent(jobId: string): Promise<NewVolumeIntent | undefined>;
  /** Every recorded intent, in no order. */
  listNewVolumeIntents(): Promise<NewVolumeIntent[]>;
  /** Idempotent. */
  deleteNewVolumeIntent(jobId: string): Promise<void>;
}
