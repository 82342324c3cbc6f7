import type {
  BackupJob,
  BackupResult,
  BackupService,
  BackupServiceDescription,
  BackupSource,
  CompressionAlgorithm,
  DeleteOptions,
  RestoreOptions,
  VerifyOptions,
  VerifyReport,
} from '../contracts/backup-service.js';
import type { BlockDevice } from '../contracts/block-device.js';
import type { CallOptions, ObjectStore } from '../contracts/object-store.js';
import type { BackupRecord } from '../contracts/records.js';
import { CairnError, isCairnError, isNotFound, toCairnError } from '../errors.js';
import { byCreation } from '../memory/memory-catalog.js';
import { nowIso } from '../util/clock.js';
import { eachUntilAborted, untilAborted } from '../util/until-aborted.js';
import { writeBackup, type WriteOptions } from './backup-writer.js';
import { Keys, type Manifest } from './format.js';
import { collectGarbage, type GcOptions, type GcReport } from './garbage-collector.js';
import { noSpaceErrno } from '../util/no-space.js';
import { Repository, type InitOptions, type OpenOptions } from './repository.js';
import { restoreBackup } from './restorer.js';
import { releaseAll, type LockHandle, type LockInfo } from './repository-locks.js';
import { verifyBackups } from './verifier.js';

const RECORD_FORMAT = 'cairn-record/1';

export interface ChunkedServiceOptions extends OpenOptions, WriteOptions {
  /** Service name in records and errors (the target's name, e.g. `posix`). Default: the store's name. */
  name?: string;
  /** Create the repository when the store has none. Default false (`NOT_FOUND`). */
  init?: InitOptions | boolean;
  /**
   * Told of a failure that does not fail the job it happened in: repository locks a backup,
   * restore, verify or gc could not release once done (they expire on their own; `details.locks`
   * names them). Default: process.emitWarning.
   */
  onWarning?: (warning: CairnError) => void;
  /**
   * Whether the service owns the store given to `open`: once open resolves, the service's close()
   * closes the store too (ObjectStore.close). The registry sets it for the stores it builds
   * (DriverRegistry.createBackupService). Default false: a store the caller passed in stays the
   * caller's to close, and so does the store of an open that rejects, whatever this says.
   */
  ownsStore?: boolean;
}

export interface RepositoryStats {
  id: string;
  encrypted: boolean;
  chunkSize: number;
  compression: CompressionAlgorithm;
  backups: number;
  packs: number;
  chunks: number;
  /** Bytes in pack objects. */
  storedBytes: number;
  /** Sum of chunk plaintext lengths. */
  rawBytes: number;
  /** Chunk list pages (repository format 4) and their bytes. */
  chunkListPages: number;
  chunkListBytes: number;
}

/**
 * Cinder's chunked template made a deduplicating repository: any ObjectStore (posix, S3, Swift…)
 * becomes a full backup service. Every backup is a self-contained manifest over shared chunks,
 * so backups do not depend on each other (`dependentChains: false`) and each restores in one pass.
 */
export class ChunkedBackupService implements BackupService {
  readonly name: string;

  private constructor(
    readonly repository: Repository,
    private readonly options: ChunkedServiceOptions,
  ) {
    this.name = options.name ?? repository.store.name;
  }

  /** Opens (or with `init`, creates then opens) the repository in `store`. See Repository.open. */
  static async open(store: ObjectStore, options: ChunkedServiceOptions = {}): Promise<ChunkedBackupService> {
    if (options.init) {
      try {
        await Repository.init(store, options.init === true ? { passphrase: options.passphrase } : { passphrase: options.passphrase, ...options.init });
      } catch (err) {
        if (!(isCairnError(err) && err.code === 'ALREADY_EXISTS')) throw err;
      }
    }
    return new ChunkedBackupService(await Repository.open(store, options), options);
  }

  describe(): BackupServiceDescription {
    const all: CompressionAlgorithm[] = ['zstd', 'lz4', 'gzip', 'none'];
    const first = this.repository.config.compression;
    return {
      name: this.name,
      capabilities: {
        incremental: true,
        dependentChains: false,
        cascadeDelete: false,
        dedup: true,
        encryption: true,
        changedBlockTracking: true,
        vmConfig: true,
        compression: [first, ...all.filter((c) => c !== first)],
      },
    };
  }

  async backup(job: BackupJob, source: BackupSource): Promise<BackupResult> {
    return this.tag(async () => {
      const repo = this.repository;
      repo.processor(); // the worker threads boot while the locks are taken and the index loads
      const [shared, volumeLock] = await this.backupLocks(job);
      return this.releasingAfter([volumeLock, shared], `backup ${job.backup.id}`, async () => {
        // The index loads alongside the parent's manifest and the first reads; writeBackup waits
        // for it before its first dedup decision. The job's signal ends the load (a store whose
        // listing or reads of index/ hang does not hold a cancelled backup): see ChunkIndex.refresh.
        const indexReady = repo.index.refresh({ signal: job.signal });
        try {
          await repo.upgradeFormat({ signal: job.signal });
          let parent: Manifest | undefined;
          if (job.parent) {
            // The parent's manifest and its chunk list pages are read for this backup alone: its
            // signal ends those reads (a store that hangs does not hold a cancelled backup).
            const parentId = job.parent.id;
            parent = await repo.readManifest(parentId, { signal: job.signal }).catch((err: unknown): never => {
              throw parentGone(parentId, err);
            });
            if (parent.volumeId !== job.volume.id) throw new CairnError('INVALID_INPUT', `parent ${job.parent.id} belongs to volume ${parent.volumeId}, not ${job.volume.id}`);
          }
          return (await writeBackup(repo, job, source, parent, { ...this.options, indexReady, lock: shared })).result;
        } finally {
          await indexReady.catch(() => undefined); // its failure, if any, was raised by writeBackup
        }
      });
    });
  }

  /**
   * `fn`'s outcome, once `locks` are released. A lock that cannot be released (the store fails
   * every try) is left to expire, which it does on its own since nothing refreshes it any more:
   * that neither fails a job that succeeded (a backup whose manifest is written is there to
   * restore) nor replaces the job's own error; it goes to `onWarning`, with the store's code.
   */
  private async releasingAfter<T>(locks: LockHandle[], job: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } finally {
      await releaseAll(locks).catch((err: unknown) => {
        const e = toCairnError(err, this.name);
        this.warn(new CairnError(e.code, `${job}: repository locks ${locks.map((l) => l.doc.id).join(', ')} could not be released and are left to expire: ${e.message}`, { driver: this.name, cause: err, details: { locks: locks.map((l) => l.doc.id) } }));
      });
    }
  }

  private warn(warning: CairnError): void {
    if (this.options.onWarning) this.options.onWarning(warning);
    else process.emitWarning(warning);
  }

  /**
   * A backup's two locks, `shared` (against GC) and `volume` (against another backup of the same
   * volume), taken at once: they never conflict with each other. When one cannot be had, the
   * other is given up (or its wait stopped) before the error is raised.
   */
  private async backupLocks(job: BackupJob): Promise<[LockHandle, LockHandle]> {
    const stop = new AbortController();
    const signal = job.signal ? AbortSignal.any([job.signal, stop.signal]) : stop.signal;
    const purpose = `backup ${job.backup.id}`;
    const taking = [
      this.repository.locks.acquire('shared', { purpose, wait: true, signal }),
      this.repository.locks.acquire('volume', { purpose, volumeId: job.volume.id, wait: true, signal }),
    ];
    for (const t of taking) t.catch(() => stop.abort());
    const [a, b] = await Promise.allSettled(taking);
    if (a!.status === 'fulfilled' && b!.status === 'fulfilled') return [a!.value, b!.value];
    await releaseAll([a!, b!].flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])));
    // The first real failure, not the abort it caused in the other.
    const reasons = [a!, b!].filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    throw reasons.find((e) => !(isCairnError(e) && e.code === 'CANCELLED' && !job.signal?.aborted)) ?? reasons[0];
  }

  /** Restores under the shared lock, so a GC (which repacks) waits instead of pulling packs from under it. */
  async restore(backup: BackupRecord, target: BlockDevice, options: RestoreOptions = {}): Promise<void> {
    return this.tag(() =>
      this.underSharedLock(`restore ${backup.id}`, options.signal, async () => {
        // The manifest is this restore's own: its reads and its pages' take the restore's signal.
        const manifest = await this.repository.readManifest(backup.id, { signal: options.signal });
        await restoreBackup(this.repository, manifest, target, options);
      }),
    );
  }

  /** Runs `fn` holding the repository's shared lock (waiting while GC holds the exclusive one). */
  private async underSharedLock<T>(purpose: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const lock = await this.repository.locks.acquire('shared', { purpose, wait: true, signal });
    return this.releasingAfter([lock], purpose, fn);
  }

  /** Removes the backup's manifest (idempotent); its chunks go at the next `gc`. */
  async delete(backup: BackupRecord, _options: DeleteOptions = {}): Promise<void> {
    return this.tag(() => this.repository.deleteManifest(backup.id));
  }

  /** Verifies under the shared lock: a GC meanwhile would make verify report packs it just removed. */
  async verify(backup?: BackupRecord, options: VerifyOptions = {}): Promise<VerifyReport> {
    return this.tag(() => this.underSharedLock(backup ? `verify ${backup.id}` : 'verify', options.signal, () => verifyBackups(this.repository, backup ? [backup.id] : undefined, options)));
  }

  /**
   * The record as a document for importRecord: the catalog's record, with the fields that describe
   * the data (those importRecord checks) taken from the manifest, so that a fresh export always
   * imports even where the catalog's copy differs (records written before 2026-12-05 kept the
   * volume's size at request time, the manifest the size copied). Without the processes that
   * work on or read the record (`owner`, `readers`: they mean nothing where the document goes).
   */
  async exportRecord(backup: BackupRecord): Promise<string> {
    return this.tag(async () => {
      const m = await this.repository.readManifest(backup.id);
      const doc = { format: RECORD_FORMAT, repository: this.repository.config.id, record: { ...m.record, ...backup, ...dataFields(m), owner: undefined, readers: undefined, status: 'available' } };
      return Buffer.from(JSON.stringify(doc)).toString('base64');
    });
  }

  /**
   * Cinder's import_record, with the repository's manifest authoritative: the document names a
   * backup of this repository, and the manifest says what that backup is. The record's data
   * fields (volumeId, volumeName, size, parentId, incremental, createdAt, volumeMetadata, stats,
   * serviceData) are the manifest's. The document supplies only labels, which describe no data
   * (name and description; the manifest's when it has none). The volume driver's checkpointId is
   * the manifest's (written since 2026-12-06; none in older manifests, so the next incremental of
   * the volume reads it whole): a document's could name a checkpoint taken after the data was
   * read, and an incremental from it would miss changes. The writer's process (`owner`), which
   * means nothing in another deployment, and any other field are dropped.
   *
   * `INVALID_INPUT` for a malformed document, one of another repository, a name or description
   * that is not a string, and a document that disagrees with the manifest on
   * volumeId, size, parentId, incremental or createdAt (`details.backupId`, `details.field`): a
   * stale or altered document. That is the caller's bad input rather than `CORRUPT`, which says
   * stored data failed its checks: the manifest has passed them (readManifest) and is what
   * restore uses. `NOT_FOUND` when the manifest is gone; `CORRUPT` when it is damaged.
   */
  async importRecord(exported: string): Promise<BackupRecord> {
    return this.tag(async () => {
      let doc: { format?: string; repository?: string; record?: Record<string, unknown> };
      try {
        doc = JSON.parse(Buffer.from(String(exported), 'base64').toString('utf8'));
      } catch (cause) {
        throw new CairnError('INVALID_INPUT', 'exported record is not valid', { cause });
      }
      const given = doc?.record;
      if (doc?.format !== RECORD_FORMAT || typeof given !== 'object' || given === null || typeof given.id !== 'string') throw new CairnError('INVALID_INPUT', 'exported record has an unknown format');
      if (doc.repository !== this.repository.config.id) throw new CairnError('INVALID_INPUT', `record belongs to repository ${String(doc.repository)}, not ${this.repository.config.id}`);
      const m = await this.repository.readManifest(given.id);
      const id = m.backupId;
      const stored = dataFields(m);
      const { incremental } = stored;
      for (const [field, value] of Object.entries(stored) as [string, unknown][]) {
        if ((given[field] ?? undefined) !== (value ?? undefined)) {
          throw new CairnError('INVALID_INPUT', `exported record of backup ${id} disagrees with its manifest on ${field}: the repository holds ${JSON.stringify(value) ?? 'none'}`, { details: { backupId: id, field } });
        }
      }
      const text = (field: string): string | undefined => {
        const value = given[field];
        if (value === undefined || value === null || typeof value === 'string') return value ?? undefined;
        throw new CairnError('INVALID_INPUT', `exported record of backup ${id} has a ${field} that is not a string`, { details: { backupId: id, field } });
      };
      return {
        id,
        name: text('name') ?? m.record.name ?? '',
        description: text('description') ?? m.record.description ?? '',
        volumeId: m.volumeId,
        volumeName: m.volumeName,
        size: m.size,
        status: 'available',
        service: this.name,
        parentId: m.parentId,
        incremental,
        checkpointId: typeof m.record.checkpointId === 'string' ? m.record.checkpointId : undefined,
        volumeMetadata: { ...m.volumeMetadata },
        // What backup() returned for it (backup-writer.ts).
        serviceData: { repository: this.repository.config.id, manifest: Keys.manifest(id) },
        stats: m.stats,
        createdAt: m.createdAt,
        updatedAt: nowIso(),
      };
    });
  }

  /** Resolves while the backup's manifest is stored (a head: nothing read). `NOT_FOUND` when it is gone. */
  async assertStored(backup: BackupRecord): Promise<void> {
    return this.tag(() => this.repository.assertManifest(backup.id));
  }

  /** Records of every backup in the repository, from their manifests (works from any machine). */
  async listBackups(): Promise<BackupRecord[]> {
    return this.tag(async () => {
      const records: BackupRecord[] = [];
      for (const id of await this.repository.listBackupIds()) {
        const m = await this.repository.readManifest(id);
        records.push({ ...m.record, service: this.name, status: 'available', stats: m.stats });
      }
      return records.sort(byCreation);
    });
  }

  /** The VM configuration stored with a backup, if any. `NOT_FOUND` for an unknown backup. */
  async vmConfig(backupId: string): Promise<Buffer | undefined> {
    const m = await this.repository.readManifest(backupId);
    return m.vmConfig ? Buffer.from(m.vmConfig, 'base64') : undefined;
  }

  /**
   * collectGarbage under the repository's exclusive lock (`BUSY` at once while a backup, restore
   * or verify holds its shared lock). A lock it cannot release once done goes to `onWarning` and
   * is left to expire, as a backup's does: it never fails a GC that did its work. A store too full
   * to repack does not stop GC from freeing what it can: see collectOrDeleteOnly.
   */
  async gc(options: GcOptions = {}): Promise<GcReport> {
    return this.tag(async () => {
      // A GC frees space: its lock may spend the store's space reserve (a dry run frees nothing).
      const lock = await this.repository.locks.acquire('exclusive', { purpose: 'gc', signal: options.signal, spendReserve: !options.dryRun });
      return this.releasingAfter([lock], 'gc', () => this.collectOrDeleteOnly(options, lock));
    });
  }

  /**
   * collectGarbage; when it fails for space (noSpaceErrno: repacks write whole new packs before
   * anything is freed, so a full store would otherwise never get space back from GC), a second
   * pass without repacks deletes what no backup references at all, and its report is the result,
   * with an `UNAVAILABLE` warning (`details.errno`, the first pass's error as cause) saying the
   * repacks were skipped. Safe: collectGarbage deletes nothing before its last write, so the pass
   * that failed freed nothing and left only extra data (packs it wrote are named, or orphans a
   * later GC removes). When the second pass fails too, the first pass's error is raised. The
   * second pass runs only while `lock` (GC's exclusive lock) is still held: on a full disk its
   * refreshes fail too, and once it has lapsed a backup may be reusing what the pass would delete,
   * so the first pass's error is raised instead.
   *
   * A store short of space from the start (ObjectStore.shortOfSpace, asked once the lock is held:
   * its reserve is missing and cannot be made, perhaps given up for this GC's own lock) gets the
   * delete-only pass at once, with the same kind of warning: repacks would otherwise fill the room
   * the reserve left, and a failed first pass could leave the second no room for its index write.
   */
  private async collectOrDeleteOnly(gcOptions: GcOptions, lock: LockHandle): Promise<GcReport> {
    // Every delete first checks the lock is still held (GcOptions.assertHeld).
    const options: GcOptions = { ...gcOptions, assertHeld: () => lock.assertHeld() };
    if (!options.dryRun && (await this.shortOfSpace())) {
      const report = await collectGarbage(this.repository, { ...options, repackThreshold: Infinity });
      this.warn(new CairnError('UNAVAILABLE', `gc: the store is short of space (its space reserve is missing and there is no room to make it again; no space left for repacks): deleted only what no backup references (${report.bytesFreed} bytes) and skipped the repacks; run gc again once there is room for the reserve and a few packs`, { driver: this.name, details: { shortOfSpace: true } }));
      return report;
    }
    try {
      return await collectGarbage(this.repository, options);
    } catch (err) {
      const errno = noSpaceErrno(err);
      if (!errno || options.dryRun || options.signal?.aborted || !isHeld(lock)) throw err;
      const report = await collectGarbage(this.repository, { ...options, repackThreshold: Infinity }).catch(() => Promise.reject(err));
      const e = toCairnError(err, this.name);
      this.warn(new CairnError('UNAVAILABLE', `gc: the store is too full to repack (${e.message}): deleted only what no backup references (${report.bytesFreed} bytes) and skipped the repacks; run gc again once there is room for a few packs`, { driver: this.name, cause: err, details: { errno } }));
      return report;
    }
  }

  /** ObjectStore.shortOfSpace where the store keeps a space reserve; false otherwise. */
  private async shortOfSpace(): Promise<boolean> {
    const store = this.repository.store;
    return store.capabilities.spaceReserve === true && (await store.shortOfSpace?.().catch(() => false)) === true;
  }

  /**
   * Counts of the repository (RepositoryStats). `options.signal` ends it (`CANCELLED` at once, the
   * index load included: ChunkIndex.refresh), however the store's listings and reads hang.
   */
  async stats(options: CallOptions = {}): Promise<RepositoryStats> {
    const { signal } = options;
    return this.tag(async () => {
      const repo = this.repository;
      await repo.index.refresh({ signal });
      let storedBytes = 0;
      let packs = 0;
      for await (const o of eachUntilAborted(repo.store.list(Keys.packs, { signal }), signal)) {
        storedBytes += o.size;
        packs++;
      }
      let chunkListPages = 0;
      let chunkListBytes = 0;
      for await (const o of eachUntilAborted(repo.store.list(Keys.chunkLists, { signal }), signal)) {
        chunkListBytes += o.size;
        chunkListPages++;
      }
      let rawBytes = 0;
      const seen = new Set<string>();
      for (const entries of repo.index.packs().values()) for (const e of entries) if (!seen.has(e.id)) (seen.add(e.id), (rawBytes += e.rawLength));
      return {
        id: repo.config.id,
        encrypted: repo.encrypted,
        chunkSize: repo.config.chunkSize,
        compression: repo.config.compression,
        backups: (await untilAborted(repo.listBackupIds({ signal }), signal)).length,
        packs,
        chunks: seen.size,
        storedBytes,
        rawBytes,
        chunkListPages,
        chunkListBytes,
      };
    });
  }

  async locks(): Promise<LockInfo[]> {
    return this.repository.locks.list();
  }

  /** Removes stale locks, or every lock with `all` (only when nothing else uses the repository). */
  async breakLocks(options: { all?: boolean } = {}): Promise<string[]> {
    return this.repository.locks.breakLocks(options);
  }

  /**
   * Releases the repository (its worker threads: Repository.close, as every call does) and then,
   * when the service owns it (`ownsStore`), the store, even when releasing the repository failed.
   * Idempotent: the store is closed once, by the first call; later calls (or ones made meanwhile)
   * settle as that close did.
   */
  async close(): Promise<void> {
    try {
      await this.repository.close();
    } finally {
      if (this.options.ownsStore) {
        this.storeClosing ??= Promise.resolve().then(() => this.repository.store.close?.());
        await this.storeClosing;
      }
    }
  }

  /** The owned store's close, once started (close). */
  private storeClosing: Promise<void> | undefined;

  /** Tags errors with the service name. */
  private async tag<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = toCairnError(err, this.name);
      throw e.driver ? e : new CairnError(e.code, e.message, { driver: this.name, cause: e.cause ?? e, details: e.details });
    }
  }
}

/**
 * A store's error at an incremental's parent's manifest: `NOT_FOUND` (the manifest gone, as
 * readManifest says it, `details.backupId` the parent) as an error that says the parent's data is
 * gone and what to do; anything else as it is.
 */
function parentGone(parentId: string, err: unknown): unknown {
  if (!isNotFound(err)) return err;
  const message =
    `parent backup ${parentId} of this incremental has no manifest in the repository: its data was deleted behind the catalog's back ` +
    `(e.g. by another deployment that imported its record and deleted it there). \`backup verify\` reports such backups; ` +
    `delete backup ${parentId} (the next incremental then builds on the newest backup before it), or run a full backup`;
  return new CairnError('NOT_FOUND', message, { cause: err, details: { backupId: parentId } });
}

/** The record fields that describe a backup's data, as its manifest holds them (exportRecord writes them, importRecord checks them). */
function dataFields(m: Manifest): Pick<BackupRecord, 'volumeId' | 'size' | 'parentId' | 'incremental' | 'createdAt'> {
  return { volumeId: m.volumeId, size: m.size, parentId: m.parentId, incremental: m.record.incremental ?? m.parentId !== undefined, createdAt: m.createdAt };
}

/** Whether `lock` is still held (LockHandle.assertHeld does not throw). */
function isHeld(lock: LockHandle): boolean {
  try {
    lock.assertHeld();
    return true;
  } catch {
    return false;
  }
}
