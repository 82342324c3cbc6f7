import { isDeepStrictEqual } from 'node:util';
import type { CompressionAlgorithm } from '../contracts/backup-service.js';
import type { CallOptions, ObjectStore } from '../contracts/object-store.js';
import { CairnError, isCairnError, throwIfAborted } from '../errors.js';
import { newId, nowIso } from '../util/clock.js';
import { untilAborted } from '../util/until-aborted.js';
import { ChunkCodec, decodeDocument, encodeDocument, openDocument } from './codec.js';
import { CATALOG_BY_VOLUME_VERSION, writeVolumeEntries } from './repository-catalog.js';
import { ChunkIndex } from './chunk-index.js';
import { InflightChunks } from './inflight-chunks.js';
import { chunkSizeProblem, compressionProblem, configProblem, kdfProblem, packSizeProblem, versionProblem } from './config-check.js';
import { ChunkProcessor } from './chunk-processor.js';
import type { CodecSettings } from './chunk-tasks.js';
import { FORMAT_NAME, FORMAT_VERSION, Keys, type Manifest, type RepositoryConfig } from './format.js';
import { DEFAULT_KDF, createKeys, openKeys, type RepositoryKeys } from './keys.js';
import { RepositoryLocks } from './repository-locks.js';
import { ChunkList } from './chunk-list.js';
import { ChunkMap, readPage } from './chunk-map.js';

/** Largest chunk list page a manifest may declare (writers use 4,096; a page is allocated whole). */
const MAX_PAGE_CHUNKS = 1 << 20;
import { HEX_ID } from './chunk-id.js';


export interface InitOptions {
  /** Chunk size in bytes, a power of two from 64 KiB to 16 MiB. Default 128 KiB (docs/repository-format.md says why). */
  chunkSize?: number;
  /** Default compression. Default `zstd`. */
  compression?: CompressionAlgorithm;
  /** Target pack size in bytes, 1–256 MiB. Default 16 MiB. */
  packSize?: number;
  /** Encrypts the repository with keys sealed under this passphrase. Default: not encrypted. */
  passphrase?: string;
  /** scrypt cost. Default N=2^15, r=8, p=1 (32 MiB; see keys.ts). */
  kdf?: { N: number; r: number; p: number };
}

export interface OpenOptions {
  /** Passphrase of an encrypted repository. */
  passphrase?: string;
  /** Worker threads for hashing/compression. Default: available parallelism, at most 256 (defaultChunkWorkers); 0 runs inline. */
  workers?: number;
  /** Lock lifetime without refresh, ms. Default 5 minutes. */
  lockTtlMs?: number;
  /**
   * Start the worker pool while the key is derived, for a process about to back up, restore or
   * verify: the threads boot on a core the derivation leaves idle, instead of beside the index
   * load once the job starts (measured here: 107 ms to boot two). Default false: the pool starts
   * on first use. No effect on an unencrypted repository (nothing to overlap).
   */
  startWorkers?: boolean;
}

const label = {
  manifest: (backupId: string) => `manifest:${backupId}`,
};

/** What the chunk workers need of a repository. */
const codecSettings = (config: RepositoryConfig, keys: RepositoryKeys | undefined): CodecSettings => ({
  idKey: keys?.idKey,
  dataKey: keys?.dataKey,
  compression: config.compression,
  chunkSize: config.chunkSize,
});

/**
 * A repository in an ObjectStore: self-describing (`config` checked at open), content-addressed
 * chunks in packs, one manifest per backup. Several processes may use one repository at once.
 */
export class Repository {
  readonly index: ChunkIndex;
  readonly codec: ChunkCodec;
  readonly locks: RepositoryLocks;
  /** Chunks this process's backups are storing that no index object names yet (see backup-writer). */
  readonly inflight = new InflightChunks();
  private processorInstance: ChunkProcessor | undefined;

  private constructor(
    readonly store: ObjectStore,
    readonly config: RepositoryConfig,
    private readonly keys: RepositoryKeys | undefined,
    private readonly options: OpenOptions,
  ) {
    this.codec = new ChunkCodec(keys?.idKey, keys?.dataKey);
    this.index = new ChunkIndex(store, this.codec);
    this.locks = new RepositoryLocks(store, options.lockTtlMs);
  }

  /** Writes a new repository's `config`. `ALREADY_EXISTS` when one is there; `INVALID_INPUT` for bad options. */
  static async init(store: ObjectStore, options: InitOptions = {}): Promise<RepositoryConfig> {
    const chunkSize = options.chunkSize ?? 128 * 1024;
    const compression = options.compression ?? 'zstd';
    const packSize = options.packSize ?? 16 * 1024 * 1024;
    const problem = chunkSizeProblem(chunkSize) ?? compressionProblem(compression) ?? packSizeProblem(packSize) ?? (options.kdf ? kdfProblem(options.kdf) : undefined);
    if (problem) throw new CairnError('INVALID_INPUT', problem);
    const encryption = options.passphrase !== undefined ? (await createKeys(options.passphrase, options.kdf ?? DEFAULT_KDF)).params : null;
    const config: RepositoryConfig = { format: FORMAT_NAME, version: FORMAT_VERSION, id: newId(), createdAt: nowIso(), chunkSize, compression, packSize, encryption };
    try {
      await store.put(Keys.config, Buffer.from(JSON.stringify(config, null, 2)), { ifAbsent: true });
    } catch (err) {
      if (isCairnError(err) && err.code === 'ALREADY_EXISTS') throw new CairnError('ALREADY_EXISTS', 'a repository already exists here', { cause: err });
      throw err;
    }
    // Best effort, as at open: a new repository gets its store's space reserve at once, so that its
    // first backup does not pay for writing it (ObjectStore.ensureReserve).
    await ensureReserve(store);
    return config;
  }

  /**
   * Opens a repository. `NOT_FOUND` when there is none, `NOT_SUPPORTED` for a newer format,
   * `CORRUPT` for an unreadable config, one lacking a field every Cairn writes (its version
   * included) or with parameters no repository can have (a sealed key of the wrong length too:
   * that is damage, which no passphrase fixes),
   * `INVALID_INPUT` for a missing or wrong passphrase, or a passphrase for a repository whose
   * config says it is not encrypted (refused: a config rewritten without encryption would
   * otherwise make this process write in clear what its user means to encrypt).
   */
  static async open(store: ObjectStore, options: OpenOptions = {}): Promise<Repository> {
    const config = await readConfig(store);
    // The space reserve (best effort, never failing the open) is made only once the open is
    // accepted: after the config's checks (nothing is written into what is no repository this
    // Cairn can use) and the passphrase's (an open refused for a wrong or missing one writes nothing).
    if (!config.encryption) {
      // An empty passphrase (an empty key file) is a passphrase given too: never a licence to write in clear.
      if (options.passphrase !== undefined) throw new CairnError('INVALID_INPUT', 'this repository is not encrypted, but a passphrase was given: refusing to write in clear what is meant to be encrypted (open it without a passphrase if it was made so)');
      await ensureReserve(store);
      return new Repository(store, config, undefined, options);
    }
    if (options.passphrase === undefined) throw new CairnError('INVALID_INPUT', 'this repository is encrypted: a passphrase or key file is required');
    if (options.passphrase === '') throw new CairnError('INVALID_INPUT', 'this repository is encrypted: the passphrase given is empty (an empty key file?)');
    const deriving = openKeys(options.passphrase, config.encryption);
    const processor = options.startWorkers ? new ChunkProcessor(deriving.then((k) => codecSettings(config, k)), options.workers) : undefined;
    try {
      const repo = new Repository(store, config, await deriving, options);
      repo.processorInstance = processor;
      await ensureReserve(store);
      return repo;
    } catch (err) {
      await processor?.close();
      throw err;
    }
  }

  /**
   * Brings a repository of an older format up to FORMAT_VERSION before this process writes into
   * it (called by the writers, under their lock). Format 1 only lacks multi-pack index objects;
   * formats 1 and 2 lack the catalog's volume entries, which are written first; format 3 only
   * lacks paged manifests (its inline ones stay readable); format 4 only lacks new-volume intents.
   * Then `config` is rewritten with the new version, after which an older Cairn refuses the
   * repository (NOT_SUPPORTED) instead of misreading its index objects or manifests, writing
   * records without entries, or ignoring new-volume intents (the catalog upgrades before it writes
   * the first).
   * Idempotent; concurrent upgraders write the same bytes.
   *
   * The rewrite starts from `config` as stored now, read again just before it (the one read at
   * open may be long out of date), and is not made when that config is no longer the one opened:
   * `NOT_SUPPORTED` when a newer Cairn has upgraded it past FORMAT_VERSION meanwhile (as open
   * refuses it; writing would downgrade it and drop that Cairn's fields), `CONFLICT`
   * (`details.field`: `id` or `encryption`) when its id or encryption parameters differ (the
   * repository was initialised again: its config and keys must not be overwritten with the old),
   * `CORRUPT` or `NOT_FOUND` as open's when it is damaged or gone. When it is at FORMAT_VERSION
   * already (another upgrader), nothing is written and this object takes it. The store has no
   * compare-and-swap: a config written by another process between that read and this put (a
   * store call apart) is still overwritten; only that window is left.
   *
   * `options.signal` (the caller's: a GC's, a backup's) goes to every store call of the upgrade,
   * each of which then ends with `CANCELLED` at once when it aborts, whatever the store does; it is
   * checked between steps too. A cancelled upgrade leaves the repository migrated or not, never
   * half: the volume entries come first and mean nothing without the new version (each names a
   * record that exists: what the upgrade adds, written again by the next one), and `config` is
   * written last, in one put, never begun once the abort was seen. A put already under way when
   * it aborts is no longer awaited and may still land: the repository is then migrated, while this
   * object keeps the old version until a later call writes the same bytes again.
   */
  async upgradeFormat(options: CallOptions = {}): Promise<void> {
    const { signal } = options;
    if (this.config.version >= FORMAT_VERSION) return;
    throwIfAborted(signal);
    // Read (and checked) before the volume entries too: nothing is written into a repository
    // initialised again meanwhile.
    const current = async (): Promise<RepositoryConfig> => {
      const stored = await readConfig(this.store, signal);
      for (const field of ['id', 'encryption'] as const) {
        if (!isDeepStrictEqual(stored[field], this.config[field])) {
          throw new CairnError('CONFLICT', `repository config's ${field} changed since this process opened it (initialised again?): not upgrading it; open the repository again`, { details: { field } });
        }
      }
      return stored;
    };
    if (this.config.version < CATALOG_BY_VOLUME_VERSION && (await current()).version < CATALOG_BY_VOLUME_VERSION) await writeVolumeEntries(this, signal);
    throwIfAborted(signal);
    const stored = await current();
    if (stored.version >= FORMAT_VERSION) {
      (this as { config: RepositoryConfig }).config = stored;
      return;
    }
    throwIfAborted(signal);
    const upgraded: RepositoryConfig = { ...stored, version: FORMAT_VERSION };
    await untilAborted(this.store.put(Keys.config, Buffer.from(JSON.stringify(upgraded, null, 2)), { signal }), signal);
    (this as { config: RepositoryConfig }).config = upgraded;
  }

  get encrypted(): boolean {
    return !!this.keys;
  }

  /** The worker pool, created on first use. */
  processor(): ChunkProcessor {
    this.processorInstance ??= new ChunkProcessor(codecSettings(this.config, this.keys), this.options.workers);
    return this.processorInstance;
  }

  /**
   * Reads a backup's manifest. `NOT_FOUND` when absent, `CORRUPT` when damaged; both name the
   * backup, in their message and as `details.backupId`.
   * `options.signal` (CallOptions) goes to the store's read of the manifest and to every later
   * read of its chunk list pages (readPage), which then reject `CANCELLED` at once when it aborts,
   * whether or not the store honours it: pass it only when the Manifest is the operation's own
   * (a restore's, a verify's), never for one shared with callers that outlive the signal.
   */
  async readManifest(backupId: string, options: CallOptions = {}): Promise<Manifest> {
    const { signal } = options;
    let blob: Buffer;
    try {
      blob = await untilAborted(this.store.get(Keys.manifest(backupId), undefined, { signal }), signal);
    } catch (err) {
      throw noManifest(backupId, err);
    }
    try {
      const m = parseManifest(openDocument(this.codec, blob, label.manifest(backupId)), (id) => readPage(this.store, this.codec, id, signal));
      if (!Number.isSafeInteger(m.size) || m.size < 0 || chunkSizeProblem(m.chunkSize)) throw new Error(`manifest has a malformed size (${String(m.size)}) or chunk size (${String(m.chunkSize)})`);
      if (m.backupId !== backupId || m.chunks.length !== Math.ceil(m.size / m.chunkSize)) throw new Error('manifest fields are inconsistent');
      return m;
    } catch (cause) {
      throw new CairnError('CORRUPT', `manifest of backup ${backupId} is damaged: ${(cause as Error).message}`, { cause, details: { backupId } });
    }
  }

  /**
   * Resolves while a backup's manifest is stored, without reading it (a head of the object: its
   * content is not checked). `NOT_FOUND` naming the backup when absent, as readManifest's.
   */
  async assertManifest(backupId: string): Promise<void> {
    try {
      await this.store.head(Keys.manifest(backupId));
    } catch (err) {
      throw noManifest(backupId, err);
    }
  }

  /**
   * Writes a manifest once, naming its chunk list's pages (which must be stored already: see
   * ChunkPageWriter). `ALREADY_EXISTS` if the backup id is taken. Returns the bytes stored.
   */
  async writeManifest(manifest: Manifest): Promise<Buffer> {
    const { chunks, ...rest } = manifest;
    if (!chunks.pageIds) throw new CairnError('INTERNAL', `manifest of backup ${manifest.backupId} has no stored chunk list pages`);
    const doc = { ...rest, version: FORMAT_VERSION, pageChunks: chunks.pageChunks, chunkPages: chunks.pageIds };
    const blob = encodeDocument(this.codec, doc, label.manifest(manifest.backupId));
    await this.store.put(Keys.manifest(manifest.backupId), blob, { ifAbsent: true });
    return blob;
  }

  /**
   * Removes backup `backupId`'s manifest only when it holds `blob` (what writeManifest stored and
   * returned): true when removed, false when it is gone or another. A writer takes back a manifest
   * it must not have published; one written by anyone else is left alone.
   */
  async withdrawManifest(backupId: string, blob: Buffer): Promise<boolean> {
    let stored: Buffer;
    try {
      stored = await this.store.get(Keys.manifest(backupId));
    } catch (err) {
      if (isCairnError(err) && err.code === 'NOT_FOUND') return false;
      throw err;
    }
    if (!stored.equals(blob)) return false;
    await this.store.delete(Keys.manifest(backupId));
    return true;
  }

  /** Ids of every backup with a manifest. `options.signal` goes to the store's list (CallOptions). */
  async listBackupIds(options: CallOptions = {}): Promise<string[]> {
    const ids: string[] = [];
    for await (const o of this.store.list(Keys.manifests, { signal: options.signal })) ids.push(o.key.slice(Keys.manifests.length));
    return ids;
  }

  /** Removes a manifest. Idempotent. Its chunks go at the next GC. */
  async deleteManifest(backupId: string): Promise<void> {
    await this.store.delete(Keys.manifest(backupId));
  }

  /**
   * Stops the worker pool, if one was started. The store is not closed: it is whoever passed it to
   * open's (ChunkedBackupService closes the stores it owns).
   */
  async close(): Promise<void> {
    await this.processorInstance?.close();
    this.processorInstance = undefined;
  }
}

/**
 * The repository's `config` as stored, checked as open checks it: `NOT_FOUND` when there is none,
 * `CORRUPT` when unreadable, lacking a field every Cairn writes or with impossible parameters,
 * `NOT_SUPPORTED` for a format newer than FORMAT_VERSION. `signal` as CallOptions'.
 */
async function readConfig(store: ObjectStore, signal?: AbortSignal): Promise<RepositoryConfig> {
  let raw: Buffer;
  try {
    raw = await untilAborted(store.get(Keys.config, undefined, { signal }), signal);
  } catch (err) {
    if (isCairnError(err) && err.code === 'NOT_FOUND') throw new CairnError('NOT_FOUND', `no repository in ${store.name} (run init first)`, { cause: err });
    throw err;
  }
  let config: RepositoryConfig;
  try {
    config = JSON.parse(raw.toString('utf8')) as RepositoryConfig;
  } catch (cause) {
    throw new CairnError('CORRUPT', 'repository config is not valid JSON', { cause });
  }
  if (config?.format !== FORMAT_NAME) throw new CairnError('CORRUPT', 'repository config does not describe a Cairn repository');
  const badVersion = versionProblem(config.version);
  if (badVersion) throw new CairnError('CORRUPT', `repository config is damaged: ${badVersion}`);
  if (config.version > FORMAT_VERSION) throw new CairnError('NOT_SUPPORTED', `repository format ${config.version} is newer than this Cairn (${FORMAT_VERSION})`);
  const problem = configProblem(config);
  if (problem) throw new CairnError('CORRUPT', `repository config is damaged: ${problem}`);
  return config;
}

/**
 * Best effort, never failing: a store with a space reserve makes it when it is missing and fits,
 * so that deletes and GC can free space on a full disk (ObjectStore.ensureReserve).
 */
async function ensureReserve(store: ObjectStore): Promise<void> {
  if (store.capabilities.spaceReserve) await store.ensureReserve?.().catch(() => false);
}

/** A store's error at a manifest's key: its `NOT_FOUND` as the repository's, naming the backup (message and `details.backupId`); anything else as it is. */
function noManifest(backupId: string, err: unknown): unknown {
  return isCairnError(err) && err.code === 'NOT_FOUND' ? new CairnError('NOT_FOUND', `backup ${backupId} has no manifest in the repository`, { cause: err, details: { backupId } }) : err;
}

const CHUNKS_KEY = Buffer.from('"chunks":');
const noPages = (id: string): Promise<ChunkList> => Promise.reject(new CairnError('INTERNAL', `no store to read chunk list page ${id} from`));

/**
 * A manifest from its JSON bytes. Format 4 names its chunk list's pages (`pageChunks`,
 * `chunkPages`), loaded later through `loadPage`. Older manifests hold the list inline; writers
 * of format 3 put it last, and it is read straight into a ChunkList (no string per chunk); any
 * other form (format 1, or chunks not last) is parsed as JSON. Throws (plain Error) for what is
 * not a manifest.
 */
export function parseManifest(json: Buffer, loadPage: (id: string) => Promise<ChunkList> = noPages): Manifest {
  const key = json.lastIndexOf(CHUNKS_KEY);
  if (key > 0 && (json[key - 1] === 0x2c || json[key - 1] === 0x7b)) {
    const scanned = ChunkList.scan(json, key + CHUNKS_KEY.length);
    if (scanned && scanned.end === json.length - 1 && json[json.length - 1] === 0x7d) {
      const head = json[key - 1] === 0x2c ? `${json.toString('utf8', 0, key - 1)}}` : '{}';
      const doc = JSON.parse(head) as Omit<Manifest, 'chunks'>;
      if (doc && typeof doc === 'object' && !Array.isArray(doc) && !('chunks' in doc)) return { ...doc, chunks: ChunkMap.inMemory(String(doc.backupId), scanned.list) };
    }
  }
  const doc = JSON.parse(json.toString('utf8')) as Omit<Manifest, 'chunks'> & { chunks?: unknown; pageChunks?: unknown; chunkPages?: unknown };
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new Error('manifest has no chunk list');
  if ('chunkPages' in doc) {
    const { pageChunks, chunkPages, ...rest } = doc;
    if (!Number.isSafeInteger(pageChunks) || (pageChunks as number) < 1 || (pageChunks as number) > MAX_PAGE_CHUNKS) throw new Error('manifest has a malformed page size');
    if (!Array.isArray(chunkPages) || !chunkPages.every((p) => p === null || (typeof p === 'string' && HEX_ID.test(p)))) throw new Error('manifest has a malformed list of chunk list pages');
    if (!Number.isSafeInteger(rest.size) || rest.size < 0 || !Number.isSafeInteger(rest.chunkSize) || rest.chunkSize < 1) throw new Error('manifest has a malformed size');
    const count = Math.ceil(rest.size / rest.chunkSize);
    if (chunkPages.length !== Math.ceil(count / (pageChunks as number))) throw new Error(`manifest names ${chunkPages.length} chunk list pages for ${count} chunks`);
    return { ...rest, chunks: ChunkMap.paged(String(rest.backupId), count, pageChunks as number, chunkPages as (string | null)[], loadPage) };
  }
  if (!Array.isArray(doc.chunks)) throw new Error('manifest has no chunk list');
  return { ...doc, chunks: ChunkMap.inMemory(String(doc.backupId), ChunkList.from(doc.chunks)) };
}
