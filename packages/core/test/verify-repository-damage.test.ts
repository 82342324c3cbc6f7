/**
 * Damage that breaks no backup still stops GC ("run verify"), so a verify of the whole repository
 * reports it: a problem without a backupId. A verify of one backup reports only that backup's.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore } from '../src/index.js';
import { chunkedRig, expectCode, filledVolume, keys, MiB } from './helpers.js';

/** A repository over one backup of a 2 MiB volume (filled from `seed`), whose one index object has a flipped byte. */
async function backupWithDamagedIndex(seed: number) {
  const store = new MemoryObjectStore('mem');
  const { service, volumes, manager } = await chunkedRig(store);
  const v = await filledVolume(volumes, 2 * MiB, seed);
  const b = await manager.backup({ volumeId: v.id });
  const [indexKey] = await keys(store, 'index/');
  const blob = await store.get(indexKey!);
  blob[blob.length - 3]! ^= 0xff;
  await store.put(indexKey!, blob);
  return { store, service, b, indexKey: indexKey! };
}

describe('verify of the whole repository', () => {
  it('reports an unreadable index object that breaks no backup, which GC refuses over', async () => {
    const store = new MemoryObjectStore('mem');
    const { service, volumes, manager } = await chunkedRig(store);
    const v = await filledVolume(volumes, 2 * MiB, 81);
    const b = await manager.backup({ volumeId: v.id });
    // An index object naming nothing any backup uses, damaged (say, left half-written by a bad disk).
    const strayId = randomBytes(32).toString('hex');
    await store.put(`index/${strayId}`, randomBytes(200));
    const { service: fresh } = await chunkedRig(store);

    await expect(fresh.gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining('verify') });
    const report = await fresh.verify();
    expect(report.checked).toEqual([b.id]);
    expect(report.problems).toEqual([{ code: 'CORRUPT', message: expect.stringContaining(`index/${strayId}`), details: { indexObject: strayId } }]);
    expect(report.problems[0]!.backupId).toBeUndefined();
    // The backup itself is whole: a verify of it finds nothing, and its record stays restorable.
    expect((await fresh.verify(await manager.getBackup(b.id))).problems).toEqual([]);
    await Promise.all([service.close(), fresh.close()]);
  });

  it('names an unreadable index object once: in the problems of the backups it breaks when there are some', async () => {
    const { store, service, b, indexKey } = await backupWithDamagedIndex(82);
    const { service: fresh } = await chunkedRig(store);
    const report = await fresh.verify();
    expect(report.problems).toEqual([{ backupId: b.id, code: 'NOT_FOUND', message: expect.stringContaining(`unreadable index objects: ${indexKey}`), details: { badChunk: { chunkId: expect.any(String), count: expect.any(Number) } } }]);
    expect(report.problems[0]!.details!.badChunk).not.toHaveProperty('pack'); // the index names no copy of it
    await expectCode(fresh.gc({ graceMs: 0 }), 'CORRUPT');
    await Promise.all([service.close(), fresh.close()]);
  });

  it('is repaired by deleting the unreadable index object: the next GC names its packs again from their trailers, and the backup verifies whole', async () => {
    const { store, service, b, indexKey } = await backupWithDamagedIndex(84);
    const { service: fresh } = await chunkedRig(store);
    expect((await fresh.verify()).problems).toEqual([expect.objectContaining({ backupId: b.id, message: expect.stringContaining(`unreadable index objects: ${indexKey}; delete them from the store`) })]);
    await store.delete(indexKey);
    const { service: repaired } = await chunkedRig(store);
    const gc = await repaired.gc({ graceMs: 0 });
    expect(gc.packsAdopted).toBeGreaterThan(0);
    expect(gc.packsDeleted).toBe(0);
    const { service: after } = await chunkedRig(store);
    expect(await after.verify()).toMatchObject({ checked: [b.id], problems: [] });
    await Promise.all([service.close(), fresh.close(), repaired.close(), after.close()]);
  });

  it('an intact repository still reports no problems', async () => {
    const { service, volumes, manager } = await chunkedRig();
    const v = await filledVolume(volumes, 2 * MiB, 83);
    await manager.backup({ volumeId: v.id });
    expect((await service.verify()).problems).toEqual([]);
    expect((await manager.verify()).problems).toEqual([]);
    await service.close();
  });
});
