/**
 * Cleanup that fails after a backup (or restore) has done its work, or while it fails: neither
 * turns a backup that is stored into a failed one, nor replaces a failed backup's own error, nor
 * skips the cleanup steps after it.
 */
import { describe, expect, it } from 'vitest';
import {
  BackupManager,
  CairnError,
  ChunkedBackupService,
  MemoryObjectStore,
  MemoryVolumeDriver,
  RepositoryCatalog,
  type ObjectPartWriter,
  type PutOptions,
} from '../src/index.js';
import { BufferDevice, CHUNK, job, pattern, record, restored } from './buffer-backups.js';
import { FAST_KDF, contents, filledVolume, keys } from './helpers.js';
import { tick } from './settle.js';

/** A store that refuses to delete lock objects (but record locks) once a manifest is written. */
class LockKeepingStore extends MemoryObjectStore {
  manifestWritten = false;
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    await super.put(key, data, options);
    if (key.startsWith('manifests/')) this.manifestWritten = true;
  }
  override async delete(key: string): Promise<void> {
    if (this.manifestWritten && key.startsWith('locks/') && !key.startsWith('locks/record-')) throw new CairnError('UNAVAILABLE', 'lock delete refused');
    return super.delete(key);
  }
}

/** A store that refuses to delete lock objects once a pack has been deleted (a GC's work is done). */
class GcLockKeepingStore extends MemoryObjectStore {
  packsDeleted = 0;
  override async delete(key: string): Promise<void> {
    if (this.packsDeleted > 0 && key.startsWith('locks/')) throw new CairnError('UNAVAILABLE', 'lock delete refused');
    await super.delete(key);
    if (key.startsWith('packs/')) this.packsDeleted++;
  }
}

/** A store whose part writers' aborts fail, and whose chunk list page puts take a while (counted while in flight). */
class AbortRefusingStore extends MemoryObjectStore {
  pagesInFlight = 0;
  override async openWrite(key: string, options?: PutOptions): Promise<ObjectPartWriter> {
    const inner = await super.openWrite(key, options);
    return {
      append: (data) => inner.append(data),
      commit: () => inner.commit(),
      abort: async () => {
        await inner.abort();
        throw new CairnError('BUSY', 'abort refused');
      },
    };
  }
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (!key.startsWith('chunklists/')) return super.put(key, data, options);
    this.pagesInFlight++;
    try {
      await tick(20);
      await super.put(key, data, options);
    } finally {
      this.pagesInFlight--;
    }
  }
}

/** A device whose reads at or past `failAt` fail UNAVAILABLE. */
class FailingDevice extends BufferDevice {
  constructor(
    data: Buffer,
    private readonly failAt: number,
  ) {
    super(data);
  }
  override async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (offset + length > this.failAt) throw new CairnError('UNAVAILABLE', 'device gone');
    return super.read(offset, length, into);
  }
}

const init = { chunkSize: CHUNK, packSize: 1024 * 1024, kdf: FAST_KDF, compression: 'none' as const };

describe('a backup whose locks cannot be released once its manifest is written', () => {
  it('manager.backup() returns it available, its manifest kept; the locks left to expire are a warning', async () => {
    const store = new LockKeepingStore('mem');
    const warnings: CairnError[] = [];
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init, onWarning: (w) => warnings.push(w) });
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const v = await filledVolume(volumes, 4 * CHUNK, 111);

    const b = await manager.backup({ volumeId: v.id });
    expect(b.status).toBe('available');
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect((await service.repository.readManifest(b.id)).backupId).toBe(b.id);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ code: 'UNAVAILABLE', driver: 'repo' });
    expect(warnings[0]!.details?.locks).toHaveLength(2); // shared and volume
    expect((await keys(store, 'locks/')).length).toBe(2); // left to expire

    // A restore whose lock cannot be released either has still restored.
    const r = await manager.restore({ backupId: b.id, newVolume: { name: 'r' } });
    expect((await contents(volumes, r.volume.id)).equals(await contents(volumes, v.id))).toBe(true);
    expect(warnings).toHaveLength(2);
    await service.close();
  });

  it('restore(backup) that wrote every byte resolves; the lock left to expire is a warning', async () => {
    const store = new LockKeepingStore('mem');
    const warnings: CairnError[] = [];
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init, onWarning: (w) => warnings.push(w) });
    const data = pattern(3 * CHUNK, 112);
    const b = record('b', data.length);
    await service.backup(job(b), { device: new BufferDevice(data) });
    warnings.length = 0;
    expect((await restored(service, b)).equals(data)).toBe(true);
    expect(warnings).toMatchObject([{ code: 'UNAVAILABLE' }]);
    await service.close();
  });
});

describe('a gc whose exclusive lock cannot be released once its work is done', () => {
  it('gc() resolves with its report, the packs removed; the lock left to expire is a warning', async () => {
    const store = new GcLockKeepingStore('mem');
    const warnings: CairnError[] = [];
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init, onWarning: (w) => warnings.push(w) });
    const [a, b] = [record('a', 3 * CHUNK), record('b', 3 * CHUNK)];
    await service.backup(job(a), { device: new BufferDevice(pattern(3 * CHUNK, 114)) });
    const data = pattern(3 * CHUNK, 115);
    await service.backup(job(b), { device: new BufferDevice(data) });
    await service.delete(a);

    const report = await service.gc({ graceMs: 0 });
    expect(report.packsDeleted).toBeGreaterThan(0);
    expect(store.packsDeleted).toBe(report.packsDeleted);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ code: 'UNAVAILABLE', driver: 'repo' });
    expect(warnings[0]!.details?.locks).toHaveLength(1);
    const left = await service.locks();
    expect(left).toMatchObject([{ kind: 'exclusive', purpose: 'gc', stale: false }]); // left to expire
    expect(left[0]!.id).toBe((warnings[0]!.details!.locks as string[])[0]);
    expect(await service.repository.listBackupIds()).toEqual(['b']);
    await service.close();

    // Once the store deletes locks again (the lock may also just expire), b restores whole.
    store.packsDeleted = 0;
    const other = await ChunkedBackupService.open(store, { name: 'repo', workers: 0 });
    expect(await other.breakLocks({ all: true })).toEqual([left[0]!.id]);
    expect((await restored(other, { ...b, status: 'available' })).equals(data)).toBe(true);
    await other.close();
  });
});

describe('a backup that fails while the store refuses to abort the pack it streams', () => {
  it('backup() rejects with its own error, after the packs that landed are named and no chunk list page write is left in flight', async () => {
    const store = new AbortRefusingStore('mem');
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init, readUnit: CHUNK, pageChunks: 1 });
    // 3 uncompressed chunks fill a 1 MiB pack: two packs land, a third is being streamed when the read of chunk 8 fails.
    const data = pattern(10 * CHUNK, 113);
    const b = record('b', data.length);
    let pagesInFlight = -1;
    await expect(
      service.backup(job(b), { device: new FailingDevice(data, 8 * CHUNK) }).finally(() => (pagesInFlight = store.pagesInFlight)),
    ).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(pagesInFlight).toBe(0);
    const packs = (await keys(store, 'packs/')).map((k) => k.slice('packs/'.length));
    expect(packs.length).toBeGreaterThanOrEqual(2);
    await service.close();

    const other = await ChunkedBackupService.open(store, { name: 'repo', workers: 0 });
    await other.repository.index.refresh();
    const named = other.repository.index.indexedPacks();
    expect(packs.filter((p) => !named.has(p))).toEqual([]);
    await other.close();
  });
});
