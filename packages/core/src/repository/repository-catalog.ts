import { AsyncLocalStorage } from 'node:async_hooks';
import type { BackupFilter, BackupPage, BackupPageQuery, Catalog, CatalogPutOptions, SectionOptions } from '../contracts/catalog.js';
import type { PutOptions } from '../contracts/object-store.js';
import type { BackupRecord, NewVolumeIntent, VolumeFlowState } from '../contracts/records.js';
import { CairnError, isAlreadyExists, isCairnError, throwIfAborted, unlessNotFound } from '../errors.js';
import { byCreation, matches } from '../memory/memory-catalog.js';
import { backupOrder, checkPageQuery, creationOrder, markerRecord, pageOf } from '../util/backup-page.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { ordinal } from '../util/order.js';
import { parsedTime, readableTimes, withCanonicalTimes } from '../util/record-times.js';
import { assertVolumeId } from '../util/validate.js';
import { eachUntilAborted, untilAborted } from '../util/until-aborted.js';
import { decodeDocument, encodeDocument } from './codec.js';
import { spending, type LockHandle } from './repository-locks.js';
import type { Repository } from './repository.js';

const PREFIX = { backups: 'catalog/backups/', volumes: 'catalog/volumes/', byVolume: 'catalog/by-volume/', intents: 'catalog/new-volumes/' } as const;

/**
 * Lifetime of a record lock without a refresh: how long a section's lock outlives a holder that
 * died on another host (or a delete of it that failed), blocking that backup's sections.
 */
export const RECORD_LOCK_TTL_MS = 30_000;

/**
 * Deletes a section's lock (the release tries three times). What fn wrote stands either way, so a
 * delete that keeps failing is left to the lock's expiry (it is no longer refreshed).
 */
async function releaseSection(lock: LockHandle): Promise<void> {
  await lock.release().catch(() => undefined);
}

/** A section's lock, as the writes made within the section see it. */
interface HeldSection {
  lock: LockHandle;
  /** Set once the section is over: writes from work it started and left running check it no more. */
  ended: boolean;
}

/** Records read at once when a listing reads several. */
const READ_CONCURRENCY = 8;

/** Format version from which every record has its by-volume entry (see volumeEntryKey). */
export const CATALOG_BY_VOLUME_VERSION = 3;

/** The backup id a volume entry's name (`<time>.<backup id>`) ends with; undefined for another name. */
const entryBackupId = (name: string): string | undefined => {
  const dot = name.indexOf('.');
  return dot > 0 && !name.includes('/') ? name.slice(dot + 1) : undefined;
};

/** A volume entry (volumeEntryKey): its whole key, its name (`<time>.<backup id>`) and the backup id. */
export interface VolumeEntry {
  key: string;
  name: string;
  backupId: string;
}

/**
 * The entry at `key` (`catalog/by-volume/<hex>/<time>.<backup id>`); undefined for any other key
 * there (one nested deeper, one directly under `catalog/by-volume/`, a name without `.`). The one
 * parser of entry keys: listings read what it accepts, and GC (orphanVolumeEntries) deletes only
 * what it accepts, so a key no listing reads is never taken for an entry.
 */
export function volumeEntry(key: string): VolumeEntry | undefined {
  if (!key.startsWith(PREFIX.byVolume)) return undefined;
  const rest = key.slice(PREFIX.byVolume.length);
  const slash = rest.indexOf('/');
  const name = rest.slice(slash + 1);
  const backupId = slash > 0 ? entryBackupId(name) : undefined;
  return backupId === undefined ? undefined : { key, name, backupId };
}

/** The directory of a volume's entries: the volume id in hex (ids may hold `:`, keys may not). */
const volumePrefix = (volumeId: string): string => `${PREFIX.byVolume}${Buffer.from(volumeId, 'utf8').toString('hex')}/`;

/**
 * A record's entry under its volume: an empty object named `<createdAt as YYYYMMDDTHHMMSSmmmZ>.<backupId>`,
 * so that names sort as records do (creation time, then id) and a volume's newest backups are found
 * without reading its older records or any other volume's.
 */
export function volumeEntryKey(record: Pick<BackupRecord, 'volumeId' | 'createdAt' | 'id'>): string {
  return `${volumePrefix(record.volumeId)}${entryName(record)}`;
}

/** The name of a record's volume entry, `<time>.<backupId>`: the same under any volume, so names of all volumes sort as their records do too. */
function entryName(record: Pick<BackupRecord, 'createdAt' | 'id'>): string {
  // Normalised as records are read (readableTimes): a record stored before putBackup made its
  // times canonical sorts by the time its entry names.
  const at = (parsedTime(record.createdAt) ?? '0000-00-00T00:00:00.000Z').replace(/[-:.]/g, '');
  return `${at}.${record.id}`;
}

/**
 * The BackupManager's records kept in the repository itself (sealed like manifests when the
 * repository is encrypted), so nothing is lost with a local database and any machine that
 * reaches the repository sees the same records. Each record is one object; writes are atomic.
 *
 * Each record also has an empty entry under its volume (`volumeEntryKey`), written before the
 * record (by an update only when it is missing) and removed after it, so an entry may lack its
 * record (skipped) but a record never lacks its entry. Listings for one volume and the newest backup of a volume read through the entries
 * in repositories of format 3 and later (older ones, whose records may lack entries, are read in
 * full until their first writer upgrades them: see writeVolumeEntries).
 *
 * `ifAbsent` writes are the store's `put(…, {ifAbsent})`: atomic across processes where the store
 * declares `atomicIfAbsent`.
 */
export class RepositoryCatalog implements Catalog {
  private readonly sections = new KeyedMutex();
  /** The sections (outermost first) whose `fn` the current async context runs in. */
  private readonly inSection = new AsyncLocalStorage<readonly HeldSection[]>();

  constructor(
    private readonly repo: Repository,
    /** `recordLockTtlMs`: a section lock's lifetime without a refresh (default RECORD_LOCK_TTL_MS). */
    private readonly options: { recordLockTtlMs?: number } = {},
  ) {}

  /**
   * Writes the record's volume entry, then the record. A refused `ifAbsent` write leaves the
   * volume listings as they were: a record already there is found before any entry is written,
   * and when another writer wins the race, the entry written meanwhile is removed again unless it
   * is the existing record's own (a damaged existing record leaves it: GC cannot take it either,
   * but listings read that record as CORRUPT anyway).
   *
   * Its times are stored canonical (withCanonicalTimes: `INVALID_INPUT`, nothing written, for
   * one that is no ISO-8601 date-time). Its volume id must key the entry (assertVolumeId, any
   * characters: at most MAX_VOLUME_ID_BYTES bytes), else `INVALID_INPUT` (`details.field:
   * volumeId`), nothing written. A record going `deleting` is the write a delete must make before it deletes anything: its
   * entry and the record are written with the store's `spendReserve` (ObjectStore PutOptions).
   */
  async putBackup(given: BackupRecord, options: CatalogPutOptions = {}): Promise<void> {
    // Before any key is built: a volume id too long for the entry's key (a driver's, an import's)
    // is INVALID_INPUT naming `volumeId`, nothing written, not a store's complaint about a key.
    assertVolumeId(given.volumeId, 'volumeId', 'catalog', { anyCharacters: true });
    const record = withCanonicalTimes(given);
    this.assertSectionsHeld();
    const entry = volumeEntryKey(record);
    if (!options.ifAbsent) {
      const freeing = spending(record.status === 'deleting');
      // An update: the entry (empty, its key fixed by the record's volume, creation time and id)
      // is almost always there already; a head instead of a durable write of the same empty
      // object (a backup updates its record four times: four store round trips less).
      if (!(await this.exists(entry))) await this.repo.store.put(entry, Buffer.alloc(0), freeing);
      await this.write(PREFIX.backups, record.id, record, freeing);
      return;
    }
    if (await this.exists(PREFIX.backups + record.id)) throw backupExists(record.id);
    await this.repo.store.put(entry, Buffer.alloc(0));
    try {
      await this.write(PREFIX.backups, record.id, record, { ifAbsent: true });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      const existing = await this.read<BackupRecord>(PREFIX.backups, record.id).then(
        (r) => (r ? volumeEntryKey(r) : undefined),
        () => entry, // unreadable: it may be this very entry's record, so the entry stays
      );
      // The refusal stands whatever this cleanup does: an entry left behind only names a record
      // that exists, which listings read once (listBackups reads each id once).
      if (existing !== entry) await this.repo.store.delete(entry).catch(() => undefined);
      throw backupExists(record.id, err);
    }
  }

  async getBackup(backupId: string): Promise<BackupRecord> {
    const r = await this.read<BackupRecord>(PREFIX.backups, backupId);
    if (!r) throw new CairnError('NOT_FOUND', `backup ${backupId} not found`, { driver: 'catalog' });
    return readableTimes(r);
  }

  async listBackups(filter: BackupFilter = {}): Promise<BackupRecord[]> {
    const ids = filter.volumeId !== undefined && this.indexed ? (await this.volumeEntries(volumePrefix(filter.volumeId))).map((e) => e.backupId) : await recordIds(this.repo);
    // Once each: a record may have two entries (one a refused ifAbsent write could not remove).
    const records = await this.readMany([...new Set(ids)]);
    return records.filter((r) => matches(r, filter)).sort(byCreation);
  }

  /**
   * One page (Catalog.listBackupPage). In creation order (the default, or `createdAt:desc`) in
   * format 3 and later, records are read through the volume entries (that volume's with
   * `volumeId`, every volume's without), whose names sort as the records do: only from the
   * marker's place on and a batch at a time, until the page and one record more are found (the
   * entries are listed whole, no record is read for that). Any other order, or an older format,
   * reads every record (of the volume, with `volumeId`: records are sealed objects, nothing else
   * knows their fields), then sorts and cuts.
   */
  async listBackupPage(query: BackupPageQuery = {}): Promise<BackupPage> {
    const { limit, sort } = checkPageQuery(query);
    const marker = await markerRecord((id) => this.getBackup(id), query.marker);
    const order = backupOrder(sort);
    const filter: BackupFilter = { volumeId: query.volumeId, status: query.status, parentId: query.parentId, service: query.service, name: query.name };
    const dir = creationOrder(sort);
    if (this.indexed && dir !== undefined) {
      const entries = await this.volumeEntries(filter.volumeId === undefined ? PREFIX.byVolume : volumePrefix(filter.volumeId));
      return this.entryPage(filter, entries, dir, marker, limit);
    }
    return pageOf((await this.listBackups(filter)).sort(order), order, marker, limit);
  }

  async latestBackup(filter: BackupFilter & { volumeId: string }): Promise<BackupRecord | undefined> {
    if (!this.indexed) return (await this.listBackups(filter)).at(-1);
    const entries = await this.volumeEntries(volumePrefix(filter.volumeId));
    // Newest first, a few at a time: usually the first one read is the answer.
    for (let end = entries.length; end > 0; end -= READ_CONCURRENCY) {
      const batch = entries.slice(Math.max(0, end - READ_CONCURRENCY), end);
      const records = await this.readMany(batch.map((e) => e.backupId));
      // Only records read through their own entry: a record replaced with another createdAt (or
      // volume) keeps its old entry, whose name sorts it where it no longer is; its own entry,
      // which every record has, finds it in its place.
      const named = new Set(batch.map((e) => e.key));
      const hit = records.filter((r) => named.has(volumeEntryKey(r)) && matches(r, filter)).sort(byCreation).at(-1);
      if (hit) return hit;
    }
    return undefined;
  }

  /** Removes the record, then its volume entry. Idempotent. */
  async deleteBackup(backupId: string): Promise<void> {
    this.assertSectionsHeld();
    const record = await this.read<BackupRecord>(PREFIX.backups, backupId).catch((err: unknown) => {
      if (isCairnError(err) && err.code === 'CORRUPT') return undefined; // a damaged record still goes
      throw err;
    });
    await this.repo.store.delete(PREFIX.backups + backupId);
    if (record) await this.repo.store.delete(volumeEntryKey(record));
  }

  /**
   * A `record` lock of the repository (repository-locks.ts) for `backupId` held around `fn`,
   * taken after an in-process turn (so this process's sections queue here instead of polling the
   * store). Waits while another live holder has it; a dead holder's lock is stale and blocks
   * nothing on its host, and lapses within RECORD_LOCK_TTL_MS elsewhere (the lock is refreshed
   * every sixth of that while fn runs).
   *
   * Every write fn makes through this catalog (records, volume entries, volume states, intents, deletes)
   * first checks the locks of the sections it runs in, this one and those it is nested in: `BUSY`,
   * and nothing written, when one may have lapsed (its refresh did not land before it expired, as
   * in a store outage during a long section such as a reset's verify), because another process
   * may then have entered that section and changed what fn checked.
   *
   * The lock of a section that frees space (`options.freesSpace`: a delete's check and its move
   * to `deleting`) is written with the store's `spendReserve`; no other section's is, so a backup
   * that fills the disk never spends the reserve on the sections of its failure. The lock is a few
   * hundred bytes, held for the section only, and its delete gives the space back (the store makes
   * its reserve again then).
   */
  section<T>(backupId: string, fn: () => Promise<T>, signal?: AbortSignal, options: SectionOptions = {}): Promise<T> {
    return this.sections.run(
      backupId,
      async () => {
        const lock = await this.repo.locks.acquire('record', { backupId, purpose: `catalog record of backup ${backupId}`, wait: true, signal, ttlMs: this.options.recordLockTtlMs ?? RECORD_LOCK_TTL_MS, spendReserve: options.freesSpace === true });
        const held: HeldSection = { lock, ended: false };
        try {
          return await this.inSection.run([...(this.inSection.getStore() ?? []), held], fn);
        } finally {
          held.ended = true;
          await releaseSection(lock);
        }
      },
      signal,
    );
  }

  async getVolumeState(volumeId: string): Promise<VolumeFlowState | undefined> {
    return this.read<VolumeFlowState>(PREFIX.volumes, volumeId);
  }

  async listVolumeStates(): Promise<VolumeFlowState[]> {
    return this.readAll<VolumeFlowState>(PREFIX.volumes);
  }

  async putVolumeState(state: VolumeFlowState, options: CatalogPutOptions = {}): Promise<void> {
    await this.putOwn(PREFIX.volumes, state.volumeId, state, options, `volume ${state.volumeId} already has a flow state`);
  }

  async clearVolumeState(volumeId: string): Promise<void> {
    this.assertSectionsHeld();
    await this.repo.store.delete(PREFIX.volumes + volumeId);
  }

  /**
   * One sealed object per intent, `catalog/new-volumes/<jobId>`; `ifAbsent` is the store's. A
   * repository of format 4 or older is upgraded first (Repository.upgradeFormat): from then on an
   * older Cairn, which would ignore the intent, refuses the repository.
   */
  async putNewVolumeIntent(intent: NewVolumeIntent, options: CatalogPutOptions = {}): Promise<void> {
    this.assertSectionsHeld();
    await this.repo.upgradeFormat();
    await this.putOwn(PREFIX.intents, intent.jobId, intent, options, `restore job ${intent.jobId} already has a new-volume intent`);
  }

  async getNewVolumeIntent(jobId: string): Promise<NewVolumeIntent | undefined> {
    return this.read<NewVolumeIntent>(PREFIX.intents, jobId);
  }

  async listNewVolumeIntents(): Promise<NewVolumeIntent[]> {
    return this.readAll<NewVolumeIntent>(PREFIX.intents);
  }

  /**
   * Writes one object of a kind that is no backup record (a flow state, an intent) inside the
   * sections held; with `ifAbsent`, `ALREADY_EXISTS` (`taken` its message) and nothing written
   * when the object exists.
   */
  private async putOwn(prefix: string, id: string, value: unknown, options: CatalogPutOptions, taken: string): Promise<void> {
    this.assertSectionsHeld();
    try {
      await this.write(prefix, id, value, { ifAbsent: options.ifAbsent });
    } catch (err) {
      if (options.ifAbsent && isAlreadyExists(err)) throw new CairnError('ALREADY_EXISTS', taken, { driver: 'catalog', cause: err });
      throw err;
    }
  }

  /** Every object under `prefix` that reads, in listing order (one deleted meanwhile is skipped). */
  private async readAll<T>(prefix: string): Promise<T[]> {
    const out: T[] = [];
    for await (const o of this.repo.store.list(prefix)) {
      const value = await this.read<T>(prefix, o.key.slice(prefix.length));
      if (value) out.push(value);
    }
    return out;
  }

  async deleteNewVolumeIntent(jobId: string): Promise<void> {
    this.assertSectionsHeld();
    await this.repo.store.delete(PREFIX.intents + jobId);
  }

  /** `BUSY` when a lock of a running section the caller is in may have lapsed (see `section`). */
  private assertSectionsHeld(): void {
    for (const s of this.inSection.getStore() ?? []) if (!s.ended) s.lock.assertHeld();
  }

  /** Whether every record has its volume entry (format 3 and later). */
  private get indexed(): boolean {
    return this.repo.config.version >= CATALOG_BY_VOLUME_VERSION;
  }

  /**
   * The entries under `prefix` (one volume's directory, or PREFIX.byVolume for every volume's),
   * oldest first: by name (creation time, then backup id), then by key.
   */
  private async volumeEntries(prefix: string): Promise<VolumeEntry[]> {
    const out: VolumeEntry[] = [];
    for await (const o of this.repo.store.list(prefix)) {
      const entry = volumeEntry(o.key);
      if (entry) out.push(entry);
    }
    return out.sort((a, b) => ordinal(a.name, b.name) || ordinal(a.key, b.key));
  }

  /**
   * A page of records in creation order (`dir`), read through `entries` (volumeEntries, oldest
   * first) from the marker's place on (where its entry would be), READ_CONCURRENCY at a time,
   * until `limit` + 1 records match (all of them without a limit). As in latestBackup, a record
   * counts only when read through its own entry.
   */
  private async entryPage(filter: BackupFilter, entries: VolumeEntry[], dir: 'asc' | 'desc', marker: BackupRecord | undefined, limit: number | undefined): Promise<BackupPage> {
    if (dir === 'desc') entries = [...entries].reverse();
    if (marker) {
      const at = entryName(marker);
      entries = entries.filter((e) => (dir === 'asc' ? ordinal(e.name, at) > 0 : ordinal(e.name, at) < 0));
    }
    const want = limit === undefined ? Infinity : limit + 1;
    const found = new Map<string, BackupRecord>();
    for (let i = 0; i < entries.length && found.size < want; i += READ_CONCURRENCY) {
      const batch = entries.slice(i, i + READ_CONCURRENCY);
      const named = new Set(batch.map((e) => e.key));
      for (const r of await this.readMany([...new Set(batch.map((e) => e.backupId))])) {
        if (named.has(volumeEntryKey(r)) && matches(r, filter)) found.set(r.id, r);
      }
    }
    const order = backupOrder([{ key: 'createdAt', dir }, { key: 'id', dir }]);
    return pageOf([...found.values()].sort(order), order, undefined, limit);
  }

  /** The records of `ids` that exist, READ_CONCURRENCY reads at a time. */
  private async readMany(ids: readonly string[]): Promise<BackupRecord[]> {
    const out: BackupRecord[] = [];
    let next = 0;
    const reader = async (): Promise<void> => {
      while (next < ids.length) {
        const r = await this.read<BackupRecord>(PREFIX.backups, ids[next++]!);
        if (r) out.push(readableTimes(r));
      }
    };
    await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, ids.length) }, reader));
    return out;
  }

  private async write(prefix: string, id: string, doc: unknown, options?: PutOptions): Promise<void> {
    await this.repo.store.put(prefix + id, encodeDocument(this.repo.codec, doc, prefix + id), options);
  }

  /** Whether an object is at `key`. */
  private async exists(key: string): Promise<boolean> {
    return (await unlessNotFound(this.repo.store.head(key))) !== undefined;
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

const backupExists = (backupId: string, cause?: unknown): CairnError => new CairnError('ALREADY_EXISTS', `backup ${backupId} already exists`, { driver: 'catalog', cause });

/**
 * Gives every record in the repository its volume entry: part of the upgrade to format 3, run
 * before `config` says 3 (records written meanwhile by this version come with their entries).
 * Damaged records are left as they are (they list as CORRUPT either way). Idempotent. `signal`
 * (the upgrade's) goes to the listing and each put, is checked before each record, and ends the
 * call with `CANCELLED` at once when it aborts, whatever the store does.
 */
export async function writeVolumeEntries(repo: Repository, signal?: AbortSignal): Promise<void> {
  const catalog = new RepositoryCatalog(repo);
  for (const id of await recordIds(repo, signal)) {
    throwIfAborted(signal);
    let record: BackupRecord;
    try {
      record = await untilAborted(catalog.getBackup(id), signal);
    } catch (err) {
      if (isCairnError(err) && (err.code === 'NOT_FOUND' || err.code === 'CORRUPT')) continue;
      throw err;
    }
    await untilAborted(repo.store.put(volumeEntryKey(record), Buffer.alloc(0), { signal }), signal);
  }
}

/** What orphanVolumeEntries found under `catalog/by-volume/`. */
export interface VolumeEntryScan {
  /** Keys of entries whose record is gone, old enough to delete. */
  orphans: string[];
  /** Keys there that are no volume entry (volumeEntry: not written by Cairn); nothing deletes them. */
  unknown: string[];
}

/**
 * Volume entries whose record is gone (a crash between writing an entry and its record, or
 * between deleting a record and its entry), last modified at least `graceMs` ago: younger ones
 * may belong to a record being written right now. Their keys, for GC to delete; and the keys
 * under `catalog/by-volume/` that volumeEntry does not read as entries, which GC leaves alone.
 * `signal` (GC's) goes to both listings and ends the scan with `CANCELLED` at once when it
 * aborts, whatever the store does.
 */
export async function orphanVolumeEntries(repo: Repository, graceMs: number, now = Date.now(), signal?: AbortSignal): Promise<VolumeEntryScan> {
  const records = new Set(await recordIds(repo, signal));
  const scan: VolumeEntryScan = { orphans: [], unknown: [] };
  for await (const o of eachUntilAborted(repo.store.list(PREFIX.byVolume, { signal }), signal)) {
    const entry = volumeEntry(o.key);
    if (!entry) scan.unknown.push(o.key);
    else if (!records.has(entry.backupId) && now - Date.parse(o.modifiedAt) >= graceMs) scan.orphans.push(o.key);
  }
  return scan;
}

/**
 * Deletes the volume entry at `key`, one orphanVolumeEntries found, unless its record exists now;
 * true when it was deleted. A record may be written again after the scan listed the records
 * without it (a delete that removed the record, failed to remove the entry and put the record back
 * as `error_deleting`): an update writes its entry only when it is missing, so that entry keeps
 * its old date, and deleting it would leave a record no volume listing finds. A record written
 * between this check and the delete still loses its entry (a window of one store call, where the
 * scan's was GC's whole run).
 */
export async function deleteOrphanEntry(repo: Repository, key: string): Promise<boolean> {
  const entry = volumeEntry(key);
  if (!entry) return false;
  const record = await repo.store.head(PREFIX.backups + entry.backupId).catch((err: unknown) => {
    // NOT_FOUND: gone; INVALID_INPUT: an id no key can hold names no record (as `read` takes them)
    if (isCairnError(err) && (err.code === 'NOT_FOUND' || err.code === 'INVALID_INPUT')) return undefined;
    throw err;
  });
  if (record !== undefined) return false;
  await repo.store.delete(key);
  return true;
}

/**
 * The ids of every record in the repository, in no order. `signal` goes to the listing and ends
 * it with `CANCELLED` at once when it aborts, whatever the store does.
 */
async function recordIds(repo: Repository, signal?: AbortSignal): Promise<string[]> {
  const ids: string[] = [];
  for await (const o of eachUntilAborted(repo.store.list(PREFIX.backups, { signal }), signal)) ids.push(o.key.slice(PREFIX.backups.length));
  return ids;
}
