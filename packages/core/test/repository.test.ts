import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { ChunkProcessor } from '../src/repository/chunk-processor.js';
import { outputBytesPerChunk } from '../src/repository/chunk-tasks.js';
import { describe, expect, it, vi } from 'vitest';
import {
  BackupManager,
  ChunkedBackupService,
  MemoryCatalog,
  MemoryObjectStore,
  MemoryVolumeDriver,
  Repository,
  RepositoryCatalog,
  type BackupRecord,
  type ObjectStore,
} from '../src/index.js';
import { contents, expectCode, FAST_KDF, filledVolume, keys, MiB, RECORDS, sixtyRecordCatalogs } from './helpers.js';
import { decodeDocument, encodeDocument } from '../src/repository/codec.js';
import { restoreBackup } from '../src/repository/restorer.js';
import { volumeEntryKey } from '../src/repository/repository-catalog.js';


async function rig(options: { passphrase?: string; store?: ObjectStore; workers?: number } = {}) {
  const store = options.store ?? new MemoryObjectStore('mem');
  const service = await ChunkedBackupService.open(store, {
    name: 'repo',
    workers: options.workers ?? 0,
    passphrase: options.passphrase,
    init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: FAST_KDF },
  });
  const volumes = new MemoryVolumeDriver();
  const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
  return { store, service, volumes, manager };
}

describe('Repository', () => {
  it('init writes a self-describing config; a second init fails with ALREADY_EXISTS; open of an empty store with NOT_FOUND', async () => {
    const store = new MemoryObjectStore();
    await expectCode(Repository.open(store), 'NOT_FOUND');
    const config = await Repository.init(store, { chunkSize: 128 * 1024 });
    expect(config).toMatchObject({ format: 'cairn-repository', version: 5, chunkSize: 128 * 1024, compression: 'zstd', encryption: null });
    await expectCode(Repository.init(store), 'ALREADY_EXISTS');
    expect((await Repository.open(store)).config.id).toBe(config.id);
  });

  it('open of a newer format fails with NOT_SUPPORTED, of garbage with CORRUPT', async () => {
    const store = new MemoryObjectStore();
    const config = await Repository.init(store);
    await store.put('config', Buffer.from(JSON.stringify({ ...config, version: 99 })));
    await expectCode(Repository.open(store), 'NOT_SUPPORTED');
    await store.put('config', Buffer.from('{not json'));
    await expectCode(Repository.open(store), 'CORRUPT');
  });

  it('the first new-volume intent upgrades a format-4 repository to 5, which an older Cairn (blind to intents) then refuses', async () => {
    const store = new MemoryObjectStore();
    await Repository.init(store, {});
    const version = async () => JSON.parse((await store.get('config')).toString()).version;
    await store.put('config', Buffer.from(JSON.stringify({ ...JSON.parse((await store.get('config')).toString()), version: 4 })));
    const catalog = new RepositoryCatalog(await Repository.open(store));
    await catalog.putVolumeState({ volumeId: 'v', status: 'restoring-backup', previousStatus: 'available', backupId: 'b', since: new Date().toISOString() });
    expect(await version()).toBe(4); // what a version-4 Cairn knows leaves the format alone
    await catalog.putNewVolumeIntent({ jobId: 'j', backupId: 'b', since: new Date().toISOString() }, { ifAbsent: true });
    expect(await version()).toBe(5);
    expect((await catalog.listNewVolumeIntents()).map((i) => i.jobId)).toEqual(['j']);
  });

  it('init with a bad chunk size or compression fails with INVALID_INPUT and writes nothing', async () => {
    const store = new MemoryObjectStore();
    await expectCode(Repository.init(store, { chunkSize: 1000 }), 'INVALID_INPUT');
    await expectCode(Repository.init(store, { compression: 'brotli' as never }), 'INVALID_INPUT');
    expect(await keys(store, '')).toEqual([]);
  });

  it('an encrypted repository needs its passphrase: none or a wrong one fails with INVALID_INPUT', async () => {
    const store = new MemoryObjectStore();
    await Repository.init(store, { passphrase: 'right', kdf: FAST_KDF });
    await expectCode(Repository.open(store), 'INVALID_INPUT');
    await expectCode(Repository.open(store, { passphrase: 'wrong' }), 'INVALID_INPUT');
    expect((await Repository.open(store, { passphrase: 'right' })).encrypted).toBe(true);
  });

  it('an empty passphrase (an empty key file) is a passphrase given: refused for a repository in clear, and for an encrypted one', async () => {
    const clear = new MemoryObjectStore();
    await Repository.init(clear, {});
    await expect(Repository.open(clear, { passphrase: '' })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('not encrypted') });
    const sealed = new MemoryObjectStore();
    await Repository.init(sealed, { passphrase: 'right', kdf: FAST_KDF });
    await expect(Repository.open(sealed, { passphrase: '' })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('empty') });
  });

  it('startWorkers boots the pool while the key is derived: the pool is the one jobs use, and a wrong passphrase leaves no pool behind', async () => {
    const store = new MemoryObjectStore();
    await Repository.init(store, { passphrase: 'right', kdf: FAST_KDF });
    // Threads of this process (each worker is one); settled a moment after a terminate.
    const threads = async (): Promise<number> => (await new Promise((r) => setTimeout(r, 100)), readdirSync('/proc/self/task').length);
    const repo = await Repository.open(store, { passphrase: 'right', startWorkers: true, workers: 2 });
    const pool = repo.processor();
    expect(pool.size).toBe(2);
    const input = ChunkProcessor.buffer(65536);
    input.fill(3);
    const [chunk] = await pool.process(input, ChunkProcessor.buffer(outputBytesPerChunk(65536)), [null]);
    expect(chunk!.id).toBe(repo.codec.chunkId(input)); // keyed with the derived id key
    const withPool = await threads();
    await repo.close();
    const before = await threads();
    expect(before).toBe(withPool - 2);
    await expectCode(Repository.open(store, { passphrase: 'wrong', startWorkers: true, workers: 2 }), 'INVALID_INPUT');
    expect(await threads()).toBe(before);
  });

  it('an encrypted repository stores no plaintext: neither data, volume names nor the passphrase appear in any object', async () => {
    const { store, volumes, manager } = await rig({ passphrase: 'hunter2-passphrase' });
    const v = await volumes.createVolume({ size: 4 * MiB, name: 'secret-volume-name' });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    const marker = Buffer.from('TOP-SECRET-PAYLOAD-'.repeat(4000));
    await a.device.write(0, marker);
    await volumes.detach(a.id);
    const b = await manager.backup({ volumeId: v.id });
    for (const key of await keys(store, '')) {
      const obj = await store.get(key);
      expect(obj.includes('TOP-SECRET-PAYLOAD')).toBe(false);
      expect(obj.includes('secret-volume-name')).toBe(false);
      expect(obj.includes('hunter2-passphrase')).toBe(false);
    }
    const { volume } = await manager.restore({ backupId: b.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).subarray(0, marker.length).equals(marker)).toBe(true);
  });
});

describe('ChunkedBackupService storage', () => {
  it('a chunk the repository has is never stored again, across backups and volumes', async () => {
    const { store, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 8 * MiB, 5);
    const first = await manager.backup({ volumeId: v.id });
    expect(first.stats!.bytesNew).toBe(8 * MiB);
    const packsBefore = await keys(store, 'packs/');
    const again = await manager.backup({ volumeId: v.id });
    expect(again.stats!.bytesNew).toBe(0);
    expect(again.stats!.bytesReused).toBe(8 * MiB);
    const twin = await filledVolume(volumes, 8 * MiB, 5); // same content, another volume
    const third = await manager.backup({ volumeId: twin.id });
    expect(third.stats!.bytesNew).toBe(0);
    expect(await keys(store, 'packs/')).toEqual(packsBefore);
  });

  it('packs hold a volume\'s chunks in volume order, whatever order the workers finish them in', async () => {
    // With 2 workers and many read units in flight, batches finish out of order; packed as each
    // finished, their blobs interleaved one by one and a restore wrote single chunks.
    const { service, volumes, manager } = await rig({ workers: 2 });
    const v = await filledVolume(volumes, 48 * MiB, 31);
    const b = await manager.backup({ volumeId: v.id });
    const repo = service.repository;
    await repo.index.refresh();
    const m = await repo.readManifest(b.id);
    const order: { pack: string; offset: number }[] = [];
    for (let i = 0; i < m.chunks.length; i++) order.push(repo.index.get((await m.chunks.get(i))!)!);
    const packs = [...new Set(order.map((l) => l.pack))];
    expect(packs.length).toBeGreaterThan(10);
    // Each pack holds one run of consecutive chunks, in order, and packs follow one another.
    const runs = order.reduce((n, l, i) => n + (i === 0 || l.pack !== order[i - 1]!.pack ? 1 : 0), 0);
    expect(runs).toBe(packs.length);
    for (let i = 1; i < order.length; i++) if (order[i]!.pack === order[i - 1]!.pack) expect(order[i]!.offset).toBeGreaterThan(order[i - 1]!.offset);
  });

  it('a restore in windows smaller than the volume is byte-exact: zero runs across windows, a chunk in several windows', async () => {
    const { service, volumes, manager } = await rig();
    const v = await volumes.createVolume({ size: 16 * MiB });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    const block = randomBytes(128 * 1024); // the repository's chunk size: the same chunk at three offsets
    for (const at of [0, 5 * MiB, 15 * MiB]) await a.device.write(at, block);
    await a.device.write(7 * MiB + 3, randomBytes(3 * MiB)); // data over window boundaries
    await volumes.detach(a.id);
    const b = await manager.backup({ volumeId: v.id });
    const manifest = await service.repository.readManifest(b.id);
    for (const windowBytes of [128 * 1024, 3 * MiB, 64 * MiB]) {
      for (const zeroed of [true, false]) {
        const target = await volumes.createVolume({ size: 16 * MiB });
        const t = await volumes.attach({ kind: 'volume', id: target.id }, 'rw');
        if (!zeroed) await t.device.write(0, Buffer.alloc(16 * MiB, 0xee)); // an existing volume's old bytes
        await restoreBackup(service.repository, manifest, t.device, { targetIsZeroed: zeroed }, windowBytes);
        await volumes.detach(t.id);
        expect((await contents(volumes, target.id)).equals(await contents(volumes, v.id)), `window ${windowBytes}, zeroed ${zeroed}`).toBe(true);
      }
    }
  });

  it('all-zero chunks are recorded as zero and not stored; holes are not even read', async () => {
    const { service, volumes, manager } = await rig();
    const v = await volumes.createVolume({ size: 16 * MiB });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(5 * MiB, Buffer.alloc(1000, 1));
    await a.device.write(9 * MiB, Buffer.alloc(256 * 1024)); // allocated but zero
    await volumes.detach(a.id);
    const b = await manager.backup({ volumeId: v.id });
    const m = await service.repository.readManifest(b.id);
    expect((await m.chunks.slice()).filter((c) => c !== null)).toHaveLength(1);
    expect(b.stats!.bytesRead).toBe(512 * 1024); // two allocated chunks of 256 KiB
    const { volume } = await manager.restore({ backupId: b.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(await contents(volumes, v.id))).toBe(true);
  });

  it('an incremental with changed-block tracking reads only touched chunks and stores about what changed', async () => {
    const { volumes, manager } = await rig();
    const v = await filledVolume(volumes, 16 * MiB, 6);
    await manager.backup({ volumeId: v.id });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(3 * MiB + 100, Buffer.alloc(4096, 9));
    await a.device.write(11 * MiB, Buffer.alloc(65536, 8));
    await volumes.detach(a.id);
    const inc = await manager.backup({ volumeId: v.id, incremental: true });
    expect(inc.stats!.bytesRead).toBe(2 * 256 * 1024);
    expect(inc.stats!.bytesNew).toBe(2 * 256 * 1024);
    const { volume } = await manager.restore({ backupId: inc.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(await contents(volumes, v.id))).toBe(true);
  });

  it('packs hold many chunks: objects stay few', async () => {
    const { store, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 16 * MiB, 7);
    await manager.backup({ volumeId: v.id });
    const packs = await keys(store, 'packs/');
    expect(packs.length).toBeGreaterThan(0);
    expect(packs.length).toBeLessThanOrEqual(64 / 2); // 64 distinct chunks of 256 KiB, several per 1 MiB pack
    // One index object names every pack of the backup.
    expect(await keys(store, 'index/')).toHaveLength(1);
    const fresh = await Repository.open(store);
    await fresh.index.refresh();
    expect([...fresh.index.packs().keys()].map((p) => `packs/${p}`).sort()).toEqual(packs);
  });

  it('a format-1 repository (one index object per pack, no catalog volume entries) is read as it is, and upgraded to format 5 by its first backup', async () => {
    const { store, volumes, manager } = await rig({ passphrase: 'pw' });
    const v = await filledVolume(volumes, 8 * MiB, 3);
    const first = await manager.backup({ volumeId: v.id });
    // Rewrite it the way format 1 stored it: each pack's trailer index as index/<packId>.
    for (const key of await keys(store, 'index/')) await store.delete(key);
    const packs = await keys(store, 'packs/');
    for (const key of packs) {
      const pack = await store.get(key);
      const n = pack.readUInt32BE(pack.length - 12);
      await store.put(`index/${key.slice('packs/'.length)}`, pack.subarray(pack.length - 12 - n, pack.length - 12));
    }
    for (const key of await keys(store, 'catalog/by-volume/')) await store.delete(key);
    const config = JSON.parse((await store.get('config')).toString());
    await store.put('config', Buffer.from(JSON.stringify({ ...config, version: 1 })));

    const old = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, passphrase: 'pw' });
    expect(old.repository.config.version).toBe(1);
    await old.repository.index.refresh();
    expect(old.repository.index.damaged.size).toBe(0);
    expect(old.repository.index.packs().size).toBe(packs.length);
    const m2 = new BackupManager({ volumes, targets: { repo: old }, catalog: new RepositoryCatalog(old.repository) });
    // Over an existing volume: a restore to a new one records an intent, which upgrades (test above).
    const target = await volumes.createVolume({ size: 8 * MiB });
    const { volume } = await m2.restore({ backupId: first.id, volumeId: target.id });
    expect((await contents(volumes, volume.id)).equals(await contents(volumes, v.id))).toBe(true);
    expect((await old.verify()).problems).toEqual([]);
    expect(JSON.parse((await store.get('config')).toString()).version).toBe(1); // reading wrote nothing

    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(MiB, randomBytes(MiB));
    await volumes.detach(a.id);
    expect((await m2.listBackups({ volumeId: v.id })).map((b) => b.id)).toEqual([first.id]); // read in full
    const second = await m2.backup({ volumeId: v.id, incremental: true });
    expect(second.parentId).toBe(first.id);
    expect(JSON.parse((await store.get('config')).toString()).version).toBe(5);
    // The upgrade gave the older record its volume entry; the new one came with its own.
    expect(await keys(store, 'catalog/by-volume/')).toEqual([volumeEntryKey(first), volumeEntryKey(second)].sort());
    expect(second.stats!.bytesNew).toBe(MiB); // the format-1 index still serves dedup
    await m2.deleteBackup(first.id);
    await old.gc({ graceMs: 0, repackThreshold: 0.01 });
    const { volume: again } = await m2.restore({ backupId: second.id, newVolume: {} });
    expect((await contents(volumes, again.id)).equals(await contents(volumes, v.id))).toBe(true);
    expect((await old.verify()).problems).toEqual([]);
  });

  it('a middle backup restores byte-exact after its parent was deleted and GC ran', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 8 * MiB, 8);
    const full = await manager.backup({ volumeId: v.id });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(3 * MiB, 0x33));
    await volumes.detach(a.id);
    const middleBytes = await contents(volumes, v.id);
    const middle = await manager.backup({ volumeId: v.id, incremental: true });
    const b = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await b.device.write(4 * MiB, Buffer.alloc(MiB, 0x44));
    await volumes.detach(b.id);
    const last = await manager.backup({ volumeId: v.id, incremental: true });
    const storedBefore = (await service.stats()).storedBytes;
    await manager.deleteBackup(full.id);
    const report = await service.gc({ graceMs: 0, repackThreshold: 0.01 });
    expect(report.chunksRemoved).toBeGreaterThan(0);
    expect((await service.stats()).storedBytes).toBeLessThan(storedBefore);
    expect(await service.verify()).toMatchObject({ problems: [] });
    const { volume } = await manager.restore({ backupId: middle.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(middleBytes)).toBe(true);
    expect((await manager.restore({ backupId: last.id, newVolume: {} })).backup.id).toBe(last.id);
    expect(await keys(store, 'manifests/')).toHaveLength(2);
    // The index objects that named removed packs were replaced: a fresh reader finds exactly the
    // stored packs, each named, and nothing damaged.
    const fresh = await Repository.open(store);
    await fresh.index.refresh();
    expect(fresh.index.damaged.size).toBe(0);
    const stored = (await keys(store, 'packs/')).map((k) => k.slice('packs/'.length)).sort();
    expect([...fresh.index.packs().keys()].sort()).toEqual(stored);
    expect([...fresh.index.indexedPacks()].sort()).toEqual(stored);
  });

  it('a damaged index object: verify names the backup, restore fails, gc refuses with CORRUPT and deletes nothing', async () => {
    const { store, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 4 * MiB, 21);
    const b = await manager.backup({ volumeId: v.id });
    const [indexKey] = await keys(store, 'index/');
    const blob = await store.get(indexKey!);
    blob[blob.length - 3]! ^= 0xff;
    await store.put(indexKey!, blob);
    const other = await ChunkedBackupService.open(store, { name: 'repo', workers: 0 });
    const m2 = new BackupManager({ volumes, targets: { repo: other }, catalog: new RepositoryCatalog(other.repository) });
    const report = await other.verify();
    expect(report.problems.map((p) => p.backupId)).toEqual([b.id]);
    expect(report.problems[0]!.message).toContain(`unreadable index objects: ${indexKey}`);
    await expect(m2.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: expect.stringMatching(/NOT_FOUND|CORRUPT/) });
    const before = await keys(store, 'packs/');
    await expectCode(other.gc({ graceMs: 0 }), 'CORRUPT');
    expect(await keys(store, 'packs/')).toEqual(before);
  });

  it('gc keeps unreferenced packs younger than the grace period', async () => {
    const { service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 4 * MiB, 10);
    const b = await manager.backup({ volumeId: v.id });
    await manager.deleteBackup(b.id);
    const kept = await service.gc({ graceMs: 60_000 });
    expect(kept.packsDeleted).toBe(0);
    expect(kept.packsInGrace).toBeGreaterThan(0);
    const dry = await service.gc({ graceMs: 0, dryRun: true });
    expect(dry.chunksRemoved).toBeGreaterThan(0);
    expect(dry.bytesFreed).toBeGreaterThan(0);
    expect((await service.stats()).chunks).toBe(dry.chunksRemoved); // nothing removed yet
    const gone = await service.gc({ graceMs: 0 });
    expect(gone.chunksRemoved).toBe(dry.chunksRemoved);
    expect(gone.bytesFreed).toBe(dry.bytesFreed);
    expect(gone.packsDeleted).toBeGreaterThan(0);
    expect((await service.stats()).chunks).toBe(0);
  });

  it('gc fails with BUSY while a backup holds the shared lock, and refuses with CORRUPT when a manifest is unreadable', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 4 * MiB, 11);
    const b = await manager.backup({ volumeId: v.id });
    const held = await service.repository.locks.acquire('shared', { purpose: 'a backup elsewhere' });
    await expectCode(service.gc({ graceMs: 0 }), 'BUSY');
    await held.release();
    const key = `manifests/${b.id}`;
    const m = await store.get(key);
    await store.put(key, m.subarray(0, m.length - 10));
    await expectCode(service.gc({ graceMs: 0 }), 'CORRUPT');
    expect((await service.stats()).chunks).toBeGreaterThan(0); // nothing deleted
  });
});

describe('ChunkedBackupService damage', () => {
  async function backedUp() {
    const r = await rig();
    const v = await filledVolume(r.volumes, 4 * MiB, 12);
    const b = await r.manager.backup({ volumeId: v.id });
    await r.service.repository.index.refresh();
    return { ...r, v, b };
  }

  it('a flipped byte in a pack: verify names the backup with CORRUPT and restore fails with CORRUPT', async () => {
    const { store, service, manager, b } = await backedUp();
    const [packKey] = await keys(store, 'packs/');
    const pack = await store.get(packKey!);
    pack[100] ^= 1;
    await store.put(packKey!, pack);
    const report = await manager.verify(b.id);
    expect(report.problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT' })]);
    await expect(manager.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(b.id) });
    expect((await service.verify()).problems.map((p) => p.backupId)).toEqual([b.id]);
  });

  it('a missing pack: verify reports NOT_FOUND for the backup and restore fails with NOT_FOUND', async () => {
    const { store, manager, b } = await backedUp();
    const [packKey] = await keys(store, 'packs/');
    await store.delete(packKey!);
    expect((await manager.verify(b.id)).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'NOT_FOUND' })]);
    await expect(manager.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining(b.id) });
  });

  it('verify reports progress: plaintext bytes of the distinct chunks checked, out of those the index lists; short of the total when a pack is gone', async () => {
    const { store, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 4 * MiB, 1);
    const w = await filledVolume(volumes, 2 * MiB, 2);
    await manager.backup({ volumeId: v.id });
    await manager.backup({ volumeId: w.id });
    const calls: [number, number][] = [];
    const report = await manager.verify(undefined, { progress: (done, total) => calls.push([done, total]) });
    expect(report.problems).toEqual([]);
    expect(report.bytesChecked).toBe(6 * MiB);
    expect(calls[0]).toEqual([0, 6 * MiB]);
    expect(calls.at(-1)).toEqual([6 * MiB, 6 * MiB]);
    for (let i = 1; i < calls.length; i++) expect(calls[i]![0]).toBeGreaterThanOrEqual(calls[i - 1]![0]);
    const [packKey] = await keys(store, 'packs/');
    await store.delete(packKey!);
    calls.length = 0;
    const damaged = await manager.verify(undefined, { progress: (done, total) => calls.push([done, total]) });
    expect(damaged.problems.length).toBeGreaterThan(0);
    const [done, total] = calls.at(-1)!;
    expect(total).toBe(6 * MiB);
    expect(done).toBe(damaged.bytesChecked);
    expect(done).toBeLessThan(total);
  });

  it('a truncated manifest: verify reports CORRUPT naming the backup and restore fails with CORRUPT', async () => {
    const { store, manager, b } = await backedUp();
    const key = `manifests/${b.id}`;
    const m = await store.get(key);
    await store.put(key, m.subarray(0, Math.floor(m.length / 2)));
    expect((await manager.verify(b.id)).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT' })]);
    await expect(manager.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(b.id) });
  });

  it('an inline chunk list (a format-3 manifest) holding a malformed id is CORRUPT, naming the backup', async () => {
    const { store, service, manager, b } = await backedUp();
    const key = `manifests/${b.id}`;
    const repo = service.repository;
    const { chunkPages: _p, pageChunks: _n, ...doc } = decodeDocument<Record<string, unknown>>(repo.codec, await store.get(key), `manifest:${b.id}`);
    const chunks = await (await repo.readManifest(b.id)).chunks.slice();
    chunks[chunks.findIndex((c) => c !== null)] = 'not-a-chunk-id';
    await store.put(key, encodeDocument(repo.codec, { ...doc, version: 3, chunks }, `manifest:${b.id}`));
    await expect(repo.readManifest(b.id)).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(/manifest.*malformed id/) });
    expect((await manager.verify(b.id)).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT' })]);
    await expect(manager.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(b.id) });
  });

  it('a cancelled backup leaves no manifest, and gc removes what it uploaded', async () => {
    const { store, service, volumes, manager } = await rig({ workers: 2 });
    const v = await filledVolume(volumes, 16 * MiB, 13);
    const controller = new AbortController();
    let seen = 0;
    manager.on('progress', (e) => {
      seen = e.bytesDone;
      if (seen >= 8 * MiB) controller.abort();
    });
    await expectCode(manager.backup({ volumeId: v.id, signal: controller.signal }), 'CANCELLED');
    expect(await keys(store, 'manifests/')).toEqual([]);
    expect(await service.locks()).toEqual([]);
    await service.gc({ graceMs: 0 });
    expect(await keys(store, 'packs/')).toEqual([]);
    expect(await keys(store, 'chunklists/')).toEqual([]);
  });
});

describe('Repository locks', () => {
  it('a lock of a dead process on this host is stale: it blocks nothing and goes only when broken explicitly', async () => {
    const { store, service } = await rig();
    const { hostname } = await import('node:os');
    const dead = { id: 'dead-lock', kind: 'exclusive', owner: { host: hostname(), pid: 2 ** 22 + 12345 }, purpose: 'crashed gc', createdAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 3600_000).toISOString() };
    await store.put('locks/dead-lock', Buffer.from(JSON.stringify(dead)));
    expect((await service.locks()).map((l) => [l.id, l.stale])).toEqual([['dead-lock', true]]);
    const shared = await service.repository.locks.acquire('shared', { purpose: 'test' });
    await shared.release();
    expect((await service.locks()).map((l) => l.id)).toEqual(['dead-lock']);
    expect(await service.breakLocks()).toEqual(['dead-lock']);
    expect(await service.locks()).toEqual([]);
  });

  it('two backups of one volume into one repository serialize on the volume lock', async () => {
    const { service, volumes } = await rig();
    const v = await filledVolume(volumes, 4 * MiB, 14);
    const held = await service.repository.locks.acquire('volume', { purpose: 'other machine', volumeId: v.id });
    const other = await service.repository.locks.acquire('volume', { purpose: 'other volume', volumeId: 'another' });
    await other.release();
    let acquired = false;
    const waiting = service.repository.locks.acquire('volume', { purpose: 'second', volumeId: v.id, wait: true }).then((h) => ((acquired = true), h));
    await new Promise((r) => setTimeout(r, 600));
    expect(acquired).toBe(false);
    await held.release();
    await (await waiting).release();
    expect(acquired).toBe(true);
  });

  it('a backup waiting for GC\'s exclusive lock takes its volume lock meanwhile, and a cancel gives both up', async () => {
    const { service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 4 * MiB, 16);
    const gc = await service.repository.locks.acquire('exclusive', { purpose: 'gc elsewhere' });
    const job = await manager.startBackup({ volumeId: v.id });
    await new Promise((r) => setTimeout(r, 400));
    // The shared lock keeps being refused while GC holds its lock; the volume lock is held.
    expect((await service.repository.locks.list()).map((l) => l.kind).sort()).toEqual(['exclusive', 'volume']);
    job.cancel();
    await expect(job.done).rejects.toMatchObject({ code: 'CANCELLED' });
    expect((await service.repository.locks.list()).map((l) => l.kind)).toEqual(['exclusive']);
    await gc.release();
  });
});

describe('RepositoryCatalog', () => {
  it('gc removes volume entries whose record is gone once past the grace period, and keeps the others', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 2 * MiB);
    const b = await manager.backup({ volumeId: v.id });
    // What a crash between an entry and its record left, 20 minutes ago.
    const ghost = volumeEntryKey({ volumeId: v.id, createdAt: new Date().toISOString(), id: '00000000-0000-4000-8000-00000000dead' });
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() - 20 * 60_000);
      await store.put(ghost, Buffer.alloc(0));
    } finally {
      vi.useRealTimers();
    }
    const entries = () => keys(store, 'catalog/by-volume/');
    expect(await entries()).toHaveLength(2);
    expect(await service.gc()).toMatchObject({ catalogEntriesDeleted: 0 }); // younger than the default hour
    expect(await service.gc({ graceMs: 0, dryRun: true })).toMatchObject({ catalogEntriesDeleted: 1 });
    expect(await entries()).toHaveLength(2);
    expect(await service.gc({ graceMs: 0 })).toMatchObject({ catalogEntriesDeleted: 1 });
    expect(await entries()).toEqual([volumeEntryKey(b)]);
    expect((await manager.listBackups({ volumeId: v.id })).map((x) => x.id)).toEqual([b.id]);
  });

  it('gc({graceMs: 0}) keeps the volume entry of a record being written right now (entry written, record not yet)', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 2 * MiB);
    const b = await manager.backup({ volumeId: v.id });
    const catalog = new RepositoryCatalog(service.repository);
    const record: BackupRecord = { ...b, id: '00000000-0000-4000-8000-0000000000a1', status: 'creating', createdAt: new Date().toISOString() };
    // The record's put waits until GC has run: its entry is in the store, the record is not.
    const put = store.put.bind(store);
    let entryWritten!: () => void;
    let gcDone!: () => void;
    const written = new Promise<void>((r) => (entryWritten = r));
    const proceed = new Promise<void>((r) => (gcDone = r));
    store.put = async (key, data, options) => {
      if (key === `catalog/backups/${record.id}`) {
        entryWritten();
        await proceed;
      }
      return put(key, data, options);
    };
    const writing = catalog.putBackup(record);
    await written;
    expect(await service.gc({ graceMs: 0 })).toMatchObject({ catalogEntriesDeleted: 0 });
    gcDone();
    await writing;
    expect((await manager.listBackups({ volumeId: v.id })).map((x) => x.id)).toEqual([b.id, record.id]);
    expect(await catalog.latestBackup({ volumeId: v.id })).toMatchObject({ id: record.id });
  });

  it("export and import of a record drop the writer's owner process, which means nothing in another deployment", async () => {
    const { service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 2 * MiB);
    const b = await manager.backup({ volumeId: v.id });
    const exported = await manager.exportRecord(b.id);
    const doc = JSON.parse(Buffer.from(exported.record, 'base64').toString('utf8'));
    expect(doc.record).toMatchObject({ id: b.id, status: 'available' });
    expect(doc.record).not.toHaveProperty('owner');
    // Another deployment over the same storage, with its own catalog.
    const other = new BackupManager({ volumes, targets: { repo: service }, catalog: new MemoryCatalog() });
    const imported = await other.importRecord(exported.service, exported.record);
    expect(imported).toMatchObject({ id: b.id, status: 'available' });
    expect(imported.owner).toBeUndefined();
  });

  /** The catalogs: uuid-like ids, unnamed, with records of another service mixed in. */
  const catalogs = () =>
    sixtyRecordCatalogs({ id: (n) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, service: (n) => (n % 11 === 10 ? 'other' : 'repo') });

  it('a volume\'s listing reads only its own records, its newest backup only a few, with the same answers as the memory catalog', async () => {
    const { store, catalog, memory, volumes } = await catalogs();
    for (const volumeId of volumes) {
      store.reset();
      const listed = await catalog.listBackups({ volumeId });
      expect(listed).toEqual(await memory.listBackups({ volumeId }));
      expect(listed).toHaveLength(20);
      expect(store.count('get', RECORDS)).toBe(20);
      for (const filter of [{ volumeId }, { volumeId, status: 'available' as const, service: 'repo' }, { volumeId, status: 'error' as const }, { volumeId, service: 'other' }]) {
        const latest = await catalog.latestBackup(filter);
        expect(latest).toBeDefined();
        expect(latest).toEqual(await memory.latestBackup(filter));
      }
      // What an incremental asks for: among the newest few (rarer matches read further back).
      store.reset();
      await catalog.latestBackup({ volumeId, status: 'available', service: 'repo' });
      expect(store.count('get', RECORDS)).toBeLessThanOrEqual(8);
    }
    expect(await catalog.latestBackup({ volumeId: 'vol-z' })).toBeUndefined();
    store.reset();
    expect(await catalog.listBackups({ status: 'error' })).toEqual(await memory.listBackups({ status: 'error' }));
    expect(store.count('get', RECORDS)).toBe(60); // no volume: every record
  });

  it('a deleted record takes its volume entry along; an entry whose record is gone is skipped', async () => {
    const { store, catalog, memory, record } = await catalogs();
    const newest = (await catalog.latestBackup({ volumeId: 'vol-a' }))!;
    await catalog.deleteBackup(newest.id);
    await memory.deleteBackup(newest.id);
    expect(await keys(store, volumeEntryKey(newest))).toEqual([]);
    expect(await catalog.listBackups({ volumeId: 'vol-a' })).toEqual(await memory.listBackups({ volumeId: 'vol-a' }));
    // An entry left by a delete that stopped between the record and its entry.
    await store.put(volumeEntryKey(record(99, 'vol-a', 59, 'available')), Buffer.alloc(0));
    expect(await catalog.latestBackup({ volumeId: 'vol-a' })).toEqual(await memory.latestBackup({ volumeId: 'vol-a' }));
    expect(await catalog.listBackups({ volumeId: 'vol-a' })).toHaveLength(19);
    await catalog.deleteBackup(newest.id); // idempotent
  });

  it('records live in the repository: a manager on another machine sees them and restores', async () => {
    const first = await rig({ passphrase: 'pw' });
    const v = await filledVolume(first.volumes, 4 * MiB, 15);
    const b = await first.manager.backup({ volumeId: v.id, name: 'weekly' });
    const expected = await contents(first.volumes, v.id);
    // Another machine: a fresh service on the same store, fresh volumes.
    const second = await rig({ passphrase: 'pw', store: first.store });
    expect((await second.manager.listBackups()).map((r) => [r.id, r.name, r.status])).toEqual([[b.id, 'weekly', 'available']]);
    expect((await second.service.listBackups()).map((r) => r.id)).toEqual([b.id]);
    const { volume } = await second.manager.restore({ backupId: b.id, newVolume: {} });
    expect((await contents(second.volumes, volume.id)).equals(expected)).toBe(true);
  });
});

describe('BackupReader', () => {
  it('read(offset, length) returns the backup\'s bytes at any range without a restore; zero chunks are holes', async () => {
    const { service, volumes, manager } = await rig({ workers: 2 });
    const v = await filledVolume(volumes, 8 * MiB, 21);
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.writeZeroes(2 * MiB, MiB);
    await volumes.detach(a.id);
    const expected = await contents(volumes, v.id);
    const b = await manager.backup({ volumeId: v.id });
    const { BackupReader } = await import('../src/index.js');
    const reader = await BackupReader.open(service.repository, b.id, { cacheChunks: 8, readAhead: 4 });
    expect(reader.size).toBe(8 * MiB);
    for (const [offset, length] of [[0, 1], [12345, 300_000], [2 * MiB - 10, MiB + 20], [8 * MiB - 7, 7], [0, 8 * MiB]] as const) {
      expect((await reader.read(offset, length)).equals(expected.subarray(offset, offset + length))).toBe(true);
    }
    const sequential = Buffer.concat(await Promise.all(Array.from({ length: 32 }, (_, i) => reader.read(i * 256 * 1024, 256 * 1024))));
    expect(sequential.equals(expected)).toBe(true);
    // readRange: the same bytes in one batch, into a caller's buffer (zero chunks written as zeros over old bytes).
    for (const [offset, length] of [[0, 1], [12345, 300_000], [2 * MiB - 10, MiB + 20], [8 * MiB - 7, 7], [0, 8 * MiB]] as const) {
      const into = Buffer.alloc(length + 5, 0xee);
      const got = await reader.readRange(offset, length, into);
      expect(got.buffer).toBe(into.buffer);
      expect(got.equals(expected.subarray(offset, offset + length))).toBe(true);
    }
    await expectCode(reader.readRange(8 * MiB - 1, 2), 'INVALID_INPUT');
    await expectCode(reader.readRange(0, 10, Buffer.alloc(5)), 'INVALID_INPUT');
    expect(await reader.allocated()).toEqual([{ offset: 0, length: 2 * MiB }, { offset: 3 * MiB, length: 5 * MiB }]);
    await expectCode(reader.read(8 * MiB - 1, 2), 'INVALID_INPUT');
  });

  it('a damaged chunk fails only the reads that need it, with CORRUPT naming the backup', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 4 * MiB, 22);
    const b = await manager.backup({ volumeId: v.id });
    const repo = service.repository;
    await repo.index.refresh();
    const m = await repo.readManifest(b.id);
    const loc = repo.index.get((await m.chunks.get(5))!)!;
    const pack = await store.get(`packs/${loc.pack}`);
    pack[loc.offset + 3] ^= 0xff;
    await store.put(`packs/${loc.pack}`, pack);
    const { BackupReader } = await import('../src/index.js');
    const reader = await BackupReader.open(repo, b.id, { readAhead: 0 });
    const chunk = m.chunkSize;
    await expect(reader.read(5 * chunk + 10, 100)).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(b.id) });
    await expect(reader.readRange(4 * chunk, 3 * chunk)).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(b.id) });
    expect((await reader.readRange(6 * chunk, chunk)).equals((await contents(volumes, v.id)).subarray(6 * chunk, 7 * chunk))).toBe(true);
    expect((await reader.read(0, chunk)).equals((await contents(volumes, v.id)).subarray(0, chunk))).toBe(true);
  });
});

describe('ChunkedBackupService concurrency', () => {
  it('concurrent backups of different volumes into one repository each restore byte-exact', async () => {
    const { store, service, volumes, manager } = await rig({ workers: 2 });
    const vs = await Promise.all([31, 32, 33].map((seed) => filledVolume(volumes, 8 * MiB, seed)));
    // A second service instance on the same store plays another process.
    const other = await ChunkedBackupService.open(store, { name: 'repo', workers: 2 });
    const otherManager = new BackupManager({ volumes, targets: { repo: other }, catalog: new RepositoryCatalog(other.repository) });
    const backups = await Promise.all([manager.backup({ volumeId: vs[0]!.id }), otherManager.backup({ volumeId: vs[1]!.id }), manager.backup({ volumeId: vs[2]!.id })]);
    expect((await service.verify()).problems).toEqual([]);
    for (const [i, b] of backups.entries()) {
      const { volume } = await manager.restore({ backupId: b.id, newVolume: {} });
      expect((await contents(volumes, volume.id)).equals(await contents(volumes, vs[i]!.id))).toBe(true);
    }
    await other.close();
  });
});
