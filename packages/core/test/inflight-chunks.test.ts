/**
 * Concurrent backups of one process share the chunks they are storing (InflightChunks): a backup
 * that meets a chunk another is storing reuses it, and before its manifest makes sure the chunk
 * is named (naming the other's stored pack itself, or storing the chunk again), so that a failure
 * of the other backup never leaves it over data no index object names.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import {
  BackupManager,
  CairnError,
  ChunkedBackupService,
  MemoryObjectStore,
  MemoryVolumeDriver,
  RepositoryCatalog,
  type BackupJob,
  type BackupRecord,
  type BlockDevice,
  type PutOptions,
  type Volume,
} from '../src/index.js';
import { BackupReader } from '../src/repository/backup-reader.js';
import { BorrowedChunks } from '../src/repository/borrowed-chunks.js';
import { FAST_KDF, MiB, chunkedRig, contents, filledVolume, keys } from './helpers.js';

const CHUNK = 256 * 1024; // the rig's chunk size

/** A read-only device over `data`; `beforeRead` may hold or fail a read. */
function deviceOver(data: Buffer, beforeRead?: (offset: number) => Promise<void> | void): BlockDevice {
  return {
    size: data.length,
    mode: 'ro',
    extentGranularity: 4096,
    async read(offset, length, into) {
      await beforeRead?.(offset);
      const out = into ? into.subarray(0, length) : Buffer.alloc(length);
      data.copy(out, 0, offset, offset + length);
      return out;
    },
    async extents() {
      throw new CairnError('NOT_SUPPORTED', 'no extents');
    },
    async write() {},
    async writeZeroes() {},
    async flush() {},
    async close() {},
  };
}

function job(backupId: string, volumeId: string, size: number): BackupJob {
  const backup = { id: backupId, name: backupId, volumeId, volumeName: volumeId, size, createdAt: new Date().toISOString(), status: 'creating' } as BackupRecord;
  const volume = { id: volumeId, name: volumeId, size, status: 'available', createdAt: backup.createdAt, metadata: {} } as Volume;
  return { backup, volume, signal: new AbortController().signal, progress: () => {} };
}

/** Resolves once some backup has reused a chunk another backup of the process was storing. */
function firstReuse(): Promise<void> {
  return new Promise((resolve) => {
    const note = BorrowedChunks.prototype.note;
    const spy = vi.spyOn(BorrowedChunks.prototype, 'note').mockImplementation(function (this: BorrowedChunks, id, at) {
      spy.mockRestore();
      note.call(this, id, at);
      resolve();
    });
  });
}

/** A gate a device read waits at until opened (then it goes on, or fails). */
function gate(): { wait: () => Promise<void>; open: (fail?: boolean) => void; reached: Promise<void> } {
  let open!: (fail: boolean) => void;
  let reach!: () => void;
  const opened = new Promise<boolean>((r) => (open = r));
  const reached = new Promise<void>((r) => (reach = r));
  return {
    reached,
    open: (fail = false) => open(fail),
    wait: async () => {
      reach();
      if (await opened) throw new CairnError('UNAVAILABLE', 'the device went away');
    },
  };
}

const until = async (cond: () => boolean): Promise<void> => {
  while (!cond()) await new Promise((r) => setTimeout(r, 2));
};

async function readBack(service: ChunkedBackupService, backupId: string, size: number): Promise<Buffer> {
  const reader = await BackupReader.open(service.repository, backupId);
  return reader.readRange(0, size);
}

describe('concurrent backups in one process', () => {
  it('store a chunk they share once, however they interleave, and each restores byte-exact', async () => {
    for (const workers of [0, 2]) {
      const service = await ChunkedBackupService.open(new MemoryObjectStore('mem'), { name: 'repo', workers, init: { chunkSize: CHUNK, packSize: MiB, kdf: FAST_KDF } });
      const volumes = new MemoryVolumeDriver();
      const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
      const [a, b] = await Promise.all([filledVolume(volumes, 32 * MiB, 7), filledVolume(volumes, 32 * MiB, 7)]);
      const [ra, rb] = await Promise.all([manager.backup({ volumeId: a.id }), manager.backup({ volumeId: b.id })]);
      let entries = 0;
      for (const e of service.repository.index.packs().values()) entries += e.length;
      await service.repository.index.refresh();
      const unique = service.repository.index.chunkCount;
      expect(unique).toBe(128);
      // The first to finish stores again what the other still had in packs being filled or
      // uploaded (at most 3 packs of 4 chunks); before, every chunk was stored twice.
      expect(entries).toBeLessThanOrEqual(unique + 12);
      expect(ra.stats!.bytesNew + rb.stats!.bytesNew).toBeLessThanOrEqual(32 * MiB + 12 * CHUNK);
      expect(ra.stats!.bytesNew + ra.stats!.bytesReused).toBe(32 * MiB);
      expect((await service.verify()).problems).toEqual([]);
      for (const r of [ra, rb]) {
        const { volume } = await manager.restore({ backupId: r.id, newVolume: {} });
        expect((await contents(volumes, volume.id)).equals(await contents(volumes, a.id))).toBe(true);
      }
      await service.close();
    }
  });

  it('a backup that reused chunks from one that fails before storing them stores them itself: it restores, also after GC', async () => {
    const { service } = await chunkedRig(new MemoryObjectStore('mem'), { init: { packSize: 8 * MiB } });
    const data = randomBytes(2 * MiB);
    // A reads its first MiB, then waits at its second and fails there: the chunks it took are in
    // the pack it was filling, which it drops.
    const atA = gate();
    const reused = firstReuse();
    const a = service.backup(job('a', 'va', data.length), { device: deviceOver(data, (offset) => (offset >= MiB ? atA.wait() : undefined)) });
    const aFailed = expect(a).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await until(() => service.repository.inflight.ownerOf(service.repository.codec.chunkId(data.subarray(0, CHUNK))) !== undefined);
    // B reuses A's chunks, and is held before its second MiB until A has failed.
    const atB = gate();
    const b = service.backup(job('b', 'vb', data.length), { device: deviceOver(data, (offset) => (offset >= MiB ? atB.wait() : undefined)) });
    await reused;
    atA.open(true);
    await aFailed;
    atB.open();
    const result = await b;
    expect(result.stats.bytesNew).toBe(2 * MiB); // the chunks A lost, read and stored again
    expect((await readBack(service, 'b', data.length)).equals(data)).toBe(true);
    await service.gc({ graceMs: 0 });
    expect((await service.verify()).problems).toEqual([]);
    expect((await readBack(service, 'b', data.length)).equals(data)).toBe(true);
    await service.close();
  });

  it('a backup that reused chunks from a stored pack whose writer never names it names that pack itself: it restores, also after GC', async () => {
    // A's index objects are held, then refused (its pack landed; A never gets to name it).
    let refuse!: () => void;
    const refused = new Promise<void>((r) => (refuse = r));
    let failIndexPuts = false;
    class HeldIndexStore extends MemoryObjectStore {
      override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
        if (failIndexPuts && key.startsWith('index/')) {
          await refused;
          throw new CairnError('UNAVAILABLE', '503 slow down');
        }
        return super.put(key, data, options);
      }
    }
    const store = new HeldIndexStore('mem');
    const { service, manager, volumes } = await chunkedRig(store, { passphrase: 'pw' });
    const va = await filledVolume(volumes, 4 * MiB, 43);
    const vb = await filledVolume(volumes, 4 * MiB, 43); // the same bytes
    failIndexPuts = true;
    const a = manager.backup({ volumeId: va.id });
    const aFailed = expect(a).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    while ((await keys(store, 'packs/')).length < 4) await new Promise((r) => setTimeout(r, 5)); // A's packs are stored
    const indexBefore = await keys(store, 'index/');
    failIndexPuts = false; // A's first index put is waiting already; B's goes through
    const b = await manager.backup({ volumeId: vb.id });
    expect(b.stats!.bytesNew).toBe(0);
    expect(b.stats!.bytesReused).toBe(4 * MiB);
    expect((await keys(store, 'index/')).length).toBe(indexBefore.length + 1); // B's, naming A's packs
    failIndexPuts = true; // A's retry in abandon() fails too
    refuse();
    await aFailed;
    failIndexPuts = false;
    expect((await service.gc({ graceMs: 0 })).packsDeleted).toBe(0);
    expect((await service.verify()).problems).toEqual([]);
    const { volume } = await manager.restore({ backupId: b.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(await contents(volumes, vb.id))).toBe(true);
    await service.close();
  });

  it('a reused chunk that the volume no longer holds when it must be stored again fails the backup with CONFLICT, leaving no manifest', async () => {
    const { store, service } = await chunkedRig(new MemoryObjectStore('mem'), { init: { packSize: 8 * MiB } });
    const data = randomBytes(2 * MiB);
    const atA = gate();
    const reused = firstReuse();
    const a = service.backup(job('a', 'va', data.length), { device: deviceOver(data, (offset) => (offset >= MiB ? atA.wait() : undefined)) });
    const aFailed = expect(a).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await until(() => service.repository.inflight.ownerOf(service.repository.codec.chunkId(data.subarray(0, CHUNK))) !== undefined);
    const changing = Buffer.from(data);
    const atB = gate();
    const b = service.backup(job('b', 'vb', data.length), { device: deviceOver(changing, (offset) => (offset >= MiB ? atB.wait() : undefined)) });
    await reused;
    atA.open(true);
    await aFailed;
    changing[0]! ^= 1; // B's first chunk changes before B reads it again
    atB.open();
    await expect(b).rejects.toMatchObject({ code: 'CONFLICT', message: expect.stringContaining('chunk 0 of volume vb changed') });
    expect(await keys(store, 'manifests/')).toEqual([]);
    await service.close();
  });
});
