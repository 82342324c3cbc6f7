/**
 * What a restore leaves in the volume it writes, over the memory and file volume drivers and the
 * memory and real posix stores: the backup's `size` bytes from offset 0 with its zero chunks as
 * zeros (written as zeroes over an existing volume, never skipped as sparse), the bytes past the
 * backup's size as they were (as Cinder leaves them); a smaller volume refused before anything is
 * written; an incremental restored whole once its parent is deleted and collected; a damaged
 * chunk failing CORRUPT naming the backup, the existing volume left `error_restoring`, a new one
 * deleted; a stored blob whose content is not its id's refused also in an unencrypted repository.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { FileVolumeDriver } from '@cairn/volume-file';
import { afterEach, describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryObjectStore, MemoryVolumeDriver, RepositoryCatalog, type ObjectStore, type Volume, type VolumeDriver } from '../src/index.js';
import { FAST_KDF, MiB } from './helpers.js';

const CHUNK = 256 * 1024;
/** Four whole chunks and a short fifth one. */
const SIZE = 4 * CHUNK + 64 * 1024;

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(name: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `cairn-${name}-`));
  dirs.push(d);
  return d;
}

const setups: [string, () => Promise<{ store: ObjectStore; volumes: VolumeDriver }>][] = [
  ['memory store, memory volumes', async () => ({ store: new MemoryObjectStore('mem'), volumes: new MemoryVolumeDriver() })],
  ['posix store, file volumes', async () => ({ store: await PosixObjectStore.open({ directory: await tempDir('restore-store') }), volumes: new FileVolumeDriver({ directory: await tempDir('restore-volumes') }) })],
];

async function open(setup: () => Promise<{ store: ObjectStore; volumes: VolumeDriver }>, passphrase?: string, compression?: 'none') {
  const { store, volumes } = await setup();
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, passphrase, init: { chunkSize: CHUNK, packSize: MiB, kdf: FAST_KDF, compression } });
  const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
  return { store, volumes, service, manager };
}

/** Bytes that differ in every chunk (seeded). */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return b;
}

/** A backup's source: chunks 0, 2 and the tail hold data; chunks 1 and 3 are zeros. */
function source(seed: number): Buffer {
  const b = pattern(SIZE, seed);
  b.fill(0, CHUNK, 2 * CHUNK);
  b.fill(0, 3 * CHUNK, 4 * CHUNK);
  return b;
}

async function volumeWith(volumes: VolumeDriver, data: Buffer, name: string): Promise<Volume> {
  const v = await volumes.createVolume({ size: data.length, name });
  const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
  try {
    await a.device.write(0, data);
    await a.device.flush();
  } finally {
    await volumes.detach(a.id);
  }
  return v;
}

async function contents(volumes: VolumeDriver, volumeId: string): Promise<Buffer> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'ro');
  try {
    return Buffer.from(await a.device.read(0, a.device.size));
  } finally {
    await volumes.detach(a.id);
  }
}

/** Flips a byte in the middle of the stored blob of chunk `index` of backup `backupId`. */
async function damageChunk(store: ObjectStore, service: ChunkedBackupService, backupId: string, index: number): Promise<void> {
  const repo = service.repository;
  const id = (await (await repo.readManifest(backupId)).chunks.get(index))!;
  await repo.index.refresh();
  const l = repo.index.get(id)!;
  const bytes = await store.get(`packs/${l.pack}`);
  bytes[l.offset + Math.floor(l.length / 2)]! ^= 0x40;
  await store.put(`packs/${l.pack}`, bytes);
}

describe.each(setups)('restore into an existing volume (%s)', (_name, setup) => {
  it('larger than the backup: its first size bytes become the backup, zero chunks as zeros over old data; the bytes past it are left as they were', async () => {
    const { volumes, manager } = await open(setup);
    const data = source(1);
    const src = await volumeWith(volumes, data, 'src');
    const b = await manager.backup({ volumeId: src.id });
    // Every byte of the target is non-zero, so a zero chunk skipped as "sparse" would show.
    const old = pattern(2 * MiB, 99);
    for (let i = 0; i < old.length; i++) if (old[i] === 0) old[i] = 0x5a;
    const dst = await volumeWith(volumes, old, 'dst');
    await manager.restore({ backupId: b.id, volumeId: dst.id });
    const after = await contents(volumes, dst.id);
    expect(after.length).toBe(2 * MiB);
    expect(after.subarray(0, SIZE).equals(data)).toBe(true);
    expect(after.subarray(CHUNK, 2 * CHUNK).every((x) => x === 0)).toBe(true);
    expect(after.subarray(SIZE).equals(old.subarray(SIZE))).toBe(true);
    expect((await manager.getVolume(dst.id)).status).toBe('available');
  });

  it('smaller than the backup: INVALID_INPUT before anything is written, no job, the volume and the backup as they were', async () => {
    const { volumes, manager } = await open(setup);
    const b = await manager.backup({ volumeId: (await volumeWith(volumes, source(2), 'src')).id });
    const old = pattern(MiB, 7);
    const dst = await volumeWith(volumes, old, 'small');
    await expect(manager.restore({ backupId: b.id, volumeId: dst.id })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(manager.listJobs()).toEqual([]);
    expect((await contents(volumes, dst.id)).equals(old)).toBe(true);
    const view = await manager.getVolume(dst.id);
    expect(view.status).toBe('available');
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });

  it('of an incremental whose parent was deleted and collected: byte-exact, and it verifies clean', async () => {
    const { volumes, service, manager } = await open(setup);
    const data = source(3);
    const src = await volumeWith(volumes, data, 'src');
    const full = await manager.backup({ volumeId: src.id });
    // Change chunk 2 only, then back up incrementally.
    const a = await volumes.attach({ kind: 'volume', id: src.id }, 'rw');
    const changed = pattern(CHUNK, 33);
    await a.device.write(2 * CHUNK, changed);
    await a.device.flush();
    await volumes.detach(a.id);
    changed.copy(data, 2 * CHUNK);
    const inc = await manager.backup({ volumeId: src.id, incremental: true });
    expect(inc.parentId).toBe(full.id);
    await manager.deleteBackup(full.id);
    const report = await service.gc({ graceMs: 0 });
    expect(report.packsDeleted + report.packsRepacked).toBeGreaterThan(0);
    const dst = await volumeWith(volumes, pattern(SIZE, 44), 'dst');
    await manager.restore({ backupId: inc.id, volumeId: dst.id });
    expect((await contents(volumes, dst.id)).equals(data)).toBe(true);
    const fresh = await manager.restore({ backupId: inc.id, newVolume: { name: 'fresh' } });
    expect((await contents(volumes, fresh.volume.id)).equals(data)).toBe(true);
    expect((await service.verify(await manager.getBackup(inc.id))).problems).toEqual([]);
  });

  it('of a backup with a damaged chunk: CORRUPT naming the backup, the volume error_restoring, the backup available', async () => {
    const { store, volumes, service, manager } = await open(setup);
    const b = await manager.backup({ volumeId: (await volumeWith(volumes, source(4), 'src')).id });
    await damageChunk(store, service, b.id, 2);
    const dst = await volumeWith(volumes, pattern(SIZE, 45), 'dst');
    const err = await manager.restore({ backupId: b.id, volumeId: dst.id }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'CORRUPT', details: { backupId: b.id } });
    expect(String((err as Error).message)).toContain(b.id);
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
    expect((await manager.getBackup(b.id)).status).toBe('available');
    await expect(manager.backup({ volumeId: dst.id })).rejects.toMatchObject({ code: 'CONFLICT' });
  });
});

describe.each(setups)('restore into a new volume (%s)', (_name, setup) => {
  it('is byte-exact, the volume of the backup\'s size', async () => {
    const { volumes, manager } = await open(setup);
    const data = source(5);
    const b = await manager.backup({ volumeId: (await volumeWith(volumes, data, 'src')).id });
    const r = await manager.restore({ backupId: b.id, newVolume: { name: 'new' } });
    expect(r.volume.size).toBe(SIZE);
    expect((await contents(volumes, r.volume.id)).equals(data)).toBe(true);
  });

  it('of a backup with a damaged chunk: CORRUPT naming the backup, and the half-written volume is deleted, never left available', async () => {
    const { store, volumes, service, manager } = await open(setup);
    const src = await volumeWith(volumes, source(6), 'src');
    const b = await manager.backup({ volumeId: src.id });
    await damageChunk(store, service, b.id, 2);
    await expect(manager.restore({ backupId: b.id, newVolume: { name: 'new' } })).rejects.toMatchObject({ code: 'CORRUPT', details: { backupId: b.id } });
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });
});

describe('every restored chunk is checked against its id', () => {
  it.each([
    ['unencrypted', undefined],
    ['encrypted', 'secret'],
  ])('%s repository: a stored blob replaced by another chunk\'s plaintext of the same length fails CORRUPT', async (_name, passphrase) => {
    // Stored uncompressed, so that an unencrypted blob is its type byte and the plaintext.
    const { store, volumes, service, manager } = await open(setups[0]![1], passphrase, 'none');
    const b = await manager.backup({ volumeId: (await volumeWith(volumes, source(7), 'src')).id });
    const repo = service.repository;
    const id = (await (await repo.readManifest(b.id)).chunks.get(2))!;
    await repo.index.refresh();
    const l = repo.index.get(id)!;
    const bytes = await store.get(`packs/${l.pack}`);
    if (passphrase) {
      bytes[l.offset + 1]! ^= 1; // fails the seal
    } else {
      // An unencrypted blob is its type byte (0: stored as is) and the plaintext: this one still
      // says "stored as is", with other bytes of the chunk's length, which only the id check catches.
      expect([bytes[l.offset], l.length]).toEqual([0, CHUNK + 1]);
      pattern(CHUNK, 1234).copy(bytes, l.offset + 1);
    }
    await store.put(`packs/${l.pack}`, bytes);
    const dst = await volumeWith(volumes, pattern(SIZE, 46), 'dst');
    await expect(manager.restore({ backupId: b.id, volumeId: dst.id })).rejects.toMatchObject({ code: 'CORRUPT', details: { backupId: b.id, chunk: id } });
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
  });
});

describe.each(setups)('an incremental after a restore into an existing volume (%s)', (_name, setup) => {
  it('holds what the restore wrote, zero chunks over old data included', async () => {
    const { volumes, manager } = await open(setup);
    const other = source(8);
    const b = await manager.backup({ volumeId: (await volumeWith(volumes, other, 'other')).id });
    const dst = await volumeWith(volumes, pattern(SIZE, 47), 'dst');
    await manager.backup({ volumeId: dst.id });
    await manager.restore({ backupId: b.id, volumeId: dst.id });
    const inc = await manager.backup({ volumeId: dst.id, incremental: true });
    expect(inc.incremental).toBe(true);
    const r = await manager.restore({ backupId: inc.id, newVolume: { name: 'check' } });
    expect((await contents(volumes, r.volume.id)).equals(other)).toBe(true);
  });
});

/** Aborts `controller` once the restore's device has taken its first write (the driver's attach wrapped). */
function abortAtFirstWrite(volumes: VolumeDriver, controller: AbortController): void {
  const attach = volumes.attach.bind(volumes);
  volumes.attach = async (...args) => {
    const a = await attach(...args);
    if (args[1] !== 'rw') return a;
    const write = a.device.write.bind(a.device);
    a.device.write = async (offset, data) => {
      await write(offset, data);
      controller.abort();
    };
    return a;
  };
}

describe.each(setups)('a restore cancelled once it has written (%s)', (_name, setup) => {
  it('into an existing volume: CANCELLED, the volume error_restoring, the backup available; restoring it again clears it', async () => {
    const { volumes, manager } = await open(setup);
    const data = source(9);
    const b = await manager.backup({ volumeId: (await volumeWith(volumes, data, 'src')).id });
    const dst = await volumeWith(volumes, pattern(SIZE, 48), 'dst');
    const controller = new AbortController();
    const attach = volumes.attach;
    abortAtFirstWrite(volumes, controller);
    await expect(manager.restore({ backupId: b.id, volumeId: dst.id, signal: controller.signal })).rejects.toMatchObject({ code: 'CANCELLED' });
    volumes.attach = attach;
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect(manager.listJobs()).toEqual([]);
    await manager.restore({ backupId: b.id, volumeId: dst.id });
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(data)).toBe(true);
  });

  it('into a new volume: CANCELLED, the volume deleted, the backup available', async () => {
    const { volumes, manager } = await open(setup);
    const src = await volumeWith(volumes, source(10), 'src');
    const b = await manager.backup({ volumeId: src.id });
    const controller = new AbortController();
    abortAtFirstWrite(volumes, controller);
    await expect(manager.restore({ backupId: b.id, newVolume: { name: 'new' }, signal: controller.signal })).rejects.toMatchObject({ code: 'CANCELLED' });
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });
});

describe.each(setups)('a backup whose size is no multiple of 4096, restored into a larger volume (%s)', (_name, setup) => {
  it.each([
    ['its short last chunk zeros', true],
    ['its short last chunk data', false],
  ])('%s: exact up to its size, the bytes past it as they were', async (_what, zeroTail) => {
    const { volumes, manager } = await open(setup);
    const size = 4 * CHUNK + 1536;
    const data = pattern(size, 11);
    data.fill(0, CHUNK, 2 * CHUNK);
    if (zeroTail) data.fill(0, 4 * CHUNK);
    const src = await volumeWith(volumes, data, 'src');
    const b = await manager.backup({ volumeId: src.id });
    expect(b.size).toBe(size);
    const old = Buffer.alloc(2 * MiB, 0xa5);
    const dst = await volumeWith(volumes, old, 'dst');
    await manager.restore({ backupId: b.id, volumeId: dst.id });
    const after = await contents(volumes, dst.id);
    expect(after.subarray(0, size).equals(data)).toBe(true);
    expect(after.subarray(size).equals(old.subarray(size))).toBe(true);
  });
});
