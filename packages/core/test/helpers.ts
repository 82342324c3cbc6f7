import { afterEach, expect } from 'vitest';
import {
  BackupManager,
  ChunkedBackupService,
  MemoryBackupService,
  MemoryCatalog,
  MemoryObjectStore,
  MemoryVolumeDriver,
  RepositoryCatalog,
  type BackupRecord,
  type ByteRange,
  type CallOptions,
  type InitOptions,
  type ObjectInfo,
  type ObjectPartWriter,
  type ObjectStore,
  type PutOptions,
  type BackupJob,
  type BackupResult,
  type BackupSource,
  type Catalog,
  type Volume,
} from '../src/index.js';

export const MiB = 1024 * 1024;

/** scrypt parameters cheap enough for tests. */
export const FAST_KDF = { N: 1024, r: 8, p: 1 };

/** Every key under `prefix`, sorted. */
export async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out.sort();
}

/**
 * A chunked service `repo` over `store` (created on first use with 256 KiB chunks, 1 MiB packs
 * and FAST_KDF, unless `init` says otherwise), inline codec, and a manager over it and `volumes`.
 */
export async function chunkedRig(store: ObjectStore = new MemoryObjectStore('mem'), options: { passphrase?: string; init?: InitOptions; volumes?: MemoryVolumeDriver } = {}) {
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, passphrase: options.passphrase, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: FAST_KDF, ...options.init } });
  const volumes = options.volumes ?? new MemoryVolumeDriver();
  const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
  return { store, service, volumes, manager };
}

/**
 * Services a test file opens, closed after each test: registers (in the calling file, at its top
 * level or in a describe) an afterEach that closes, in the order kept, every service given to the
 * returned `keep` during the test. `keep` returns the service it was given.
 */
export function closedAfterEach(): <S extends ChunkedBackupService>(service: S) => S {
  const services: ChunkedBackupService[] = [];
  afterEach(async () => {
    for (const s of services.splice(0)) await s.close();
  });
  return (service) => {
    services.push(service);
    return service;
  };
}

export async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

/** A memory backup service that can be told to fail or stall in the middle of a copy. */
export class ScriptedService extends MemoryBackupService {
  failAfterBytes: number | undefined;
  /** Once a backup has read this many bytes, it waits for its signal. */
  stallAfterBytes: number | undefined;
  reachedStall: Promise<void>;
  private markStall!: () => void;
  /** Resolves at the first read of a backup. */
  started: Promise<void>;
  private markStarted!: () => void;
  active = 0;
  maxActive = 0;

  constructor() {
    super('scripted');
    this.reachedStall = new Promise((r) => (this.markStall = r));
    this.started = new Promise((r) => (this.markStarted = r));
  }

  override async backup(job: BackupJob, source: BackupSource): Promise<BackupResult> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      const device = source.device;
      const read = device.read.bind(device);
      let seen = 0;
      device.read = async (offset, length, into) => {
        seen += length;
        this.markStarted();
        if (this.failAfterBytes !== undefined && seen > this.failAfterBytes) throw new Error('backend exploded mid-copy');
        if (this.stallAfterBytes !== undefined && seen > this.stallAfterBytes) {
          this.markStall();
          await new Promise((_, reject) => job.signal.addEventListener('abort', () => reject(job.signal.reason), { once: true }));
        }
        await new Promise((r) => setImmediate(r));
        return read(offset, length, into);
      };
      return await super.backup(job, source);
    } finally {
      this.active--;
    }
  }
}

export interface Rig {
  volumes: MemoryVolumeDriver;
  service: ScriptedService;
  catalog: MemoryCatalog;
  manager: BackupManager;
}

export function rig(): Rig {
  const volumes = new MemoryVolumeDriver();
  const service = new ScriptedService();
  const catalog = new MemoryCatalog();
  const manager = new BackupManager({ volumes, targets: { scripted: service }, catalog });
  return { volumes, service, catalog, manager };
}

export async function filledVolume(volumes: MemoryVolumeDriver, size = 8 * MiB, seed = 1): Promise<Volume> {
  const v = await volumes.createVolume({ size, name: `vol-${seed}` });
  const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) data.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  await a.device.write(0, data);
  await volumes.detach(a.id);
  return v;
}

export async function contents(volumes: MemoryVolumeDriver, volumeId: string): Promise<Buffer> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'ro');
  try {
    return Buffer.from(await a.device.read(0, a.device.size));
  } finally {
    await volumes.detach(a.id);
  }
}

/** A catalog over `shared` with some methods replaced (another process's view of one catalog). */
export function over(shared: Catalog, methods: Partial<Catalog>): Catalog {
  return Object.assign(Object.create(shared) as Catalog, methods);
}

/** A point where a call waits: `reached` resolves when it gets there (`arrive()`), and `arrive()` resolves once `release()` is called. */
export function gate() {
  let arrived!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((r) => (arrived = r));
  const opened = new Promise<void>((r) => (release = r));
  return { reached, release, arrive: () => (arrived(), opened) };
}

/** Where a repository's catalog keeps its records (docs/repository-format.md, "Catalog"). */
export const RECORDS = 'catalog/backups/';

/** The calls a CountingStore counts, by the key (or, for `list`, the prefix) they name. */
export type CountedCall = 'get' | 'put' | 'head' | 'list';

/**
 * A memory store that counts its calls: the keys of its gets, whole puts and heads and the
 * prefixes of its lists (`count`, `keys`), and the part writers it opened and that ended,
 * committed or aborted (`opened`, `ended`). `reset()` starts every count over.
 */
export class CountingStore extends MemoryObjectStore {
  private calls: Record<CountedCall, string[]> = { get: [], put: [], head: [], list: [] };
  opened = 0;
  ended = 0;

  /** How many `call`s named a key under `prefix` since the last reset. */
  count(call: CountedCall, prefix = ''): number {
    return this.keys(call, prefix).length;
  }

  /** The keys under `prefix` that `call`s named since the last reset, in call order (repeated when called again). */
  keys(call: CountedCall, prefix = ''): string[] {
    return this.calls[call].filter((k) => k.startsWith(prefix));
  }

  reset(): void {
    this.calls = { get: [], put: [], head: [], list: [] };
    this.opened = this.ended = 0;
  }

  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    this.calls.get.push(key);
    return super.get(key, range, options);
  }

  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    this.calls.put.push(key);
    return super.put(key, data, options);
  }

  override async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    this.calls.head.push(key);
    return super.head(key, options);
  }

  override list(prefix: string, options?: CallOptions): AsyncIterable<ObjectInfo> {
    this.calls.list.push(prefix);
    return super.list(prefix, options);
  }

  override async openWrite(key: string, options?: PutOptions): Promise<ObjectPartWriter> {
    const inner = await super.openWrite(key, options);
    this.opened++;
    return {
      append: (data) => inner.append(data),
      commit: () => inner.commit().finally(() => this.ended++),
      abort: () => inner.abort().finally(() => this.ended++),
    };
  }
}

/** What a fixture record `n` is called and where it is kept (sixtyRecordCatalogs). */
export interface FixtureRecordShape {
  id(n: number): string;
  /** '' when absent. */
  name?(n: number): string;
  /** 'repo' when absent. */
  service?(n: number): string;
}

/** Record `n` of `volumeId` (1 MiB, full), created and updated `minute` minutes into 2026-11-24 UTC. */
export function fixtureRecord(shape: FixtureRecordShape, n: number, volumeId: string, minute: number, status: BackupRecord['status']): BackupRecord {
  const at = new Date(Date.UTC(2026, 10, 24, 0, minute)).toISOString();
  return {
    id: shape.id(n),
    name: shape.name?.(n) ?? '',
    description: '',
    volumeId,
    volumeName: 'v',
    size: MiB,
    status,
    service: shape.service?.(n) ?? 'repo',
    incremental: false,
    volumeMetadata: {},
    serviceData: {},
    createdAt: at,
    updatedAt: at,
  };
}

/**
 * 60 records (`shape`) over three volumes (`volumes`, one id with a colon): record i is of volume
 * i mod 3, created at minute 7i mod 60 (out of id order), and in error when i mod 5 is 4. Written
 * to a repository's catalog over a CountingStore (`store`, its counts then reset) and to a
 * memory catalog (`memory`), for answers to compare. `record(n, …)` makes another of the shape.
 */
export async function sixtyRecordCatalogs(shape: FixtureRecordShape) {
  const store = new CountingStore('mem');
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, passphrase: 'pw', init: { kdf: FAST_KDF } });
  const catalog = new RepositoryCatalog(service.repository);
  const memory = new MemoryCatalog();
  const volumes = ['vol-a', 'vol-b', 'pool:vol-c'];
  const record = (n: number, volumeId: string, minute: number, status: BackupRecord['status']) => fixtureRecord(shape, n, volumeId, minute, status);
  for (let i = 0; i < 60; i++) {
    const r = record(i, volumes[i % 3]!, (i * 7) % 60, i % 5 === 4 ? 'error' : 'available');
    await catalog.putBackup(r);
    await memory.putBackup(r);
  }
  store.reset();
  return { store, catalog, memory, volumes, record };
}
