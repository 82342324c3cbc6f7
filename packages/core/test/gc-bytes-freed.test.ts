/**
 * GC's `bytesFreed` is what the store's packs shrink by: a repacked pack's size less the new
 * packs its live chunks were copied into; a dry run's estimate agrees but for the new packs' own
 * trailers and padding (garbage-collector.ts).
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type CallOptions, type ObjectInfo, type ObjectStore } from '../src/index.js';
import { chunkedRig, closedAfterEach, filledVolume, MiB } from './helpers.js';

const keep = closedAfterEach();

/** Each pack's size by id. */
async function packSizes(store: ObjectStore): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of store.list('packs/')) out.set(o.key.slice('packs/'.length), o.size);
  return out;
}

/** A memory store counting heads of packs (what sizing them by head would cost on S3 or Swift). */
class HeadCountingStore extends MemoryObjectStore {
  packHeads = 0;
  override async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    if (key.startsWith('packs/')) this.packHeads++;
    return super.head(key, options);
  }
}

const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

describe('gc bytesFreed', () => {
  it('a real run reports the measured shrink of the packs, and a dry run agrees within the new packs\' trailers; neither heads a pack (the listing has the sizes)', async () => {
    const store = new HeadCountingStore('mem');
    const { service, volumes, manager } = await chunkedRig(store);
    keep(service);
    // 4 MiB in four 1 MiB packs of four 256 KiB chunks; then one chunk of each pack changes, and
    // the first backup goes: each old pack is a quarter dead, repacked at threshold 0.2.
    const v = await filledVolume(volumes, 4 * MiB, 7);
    const first = await manager.backup({ volumeId: v.id });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    for (let k = 0; k < 4; k++) await a.device.write(k * MiB, Buffer.alloc(256 * 1024, k + 1));
    await volumes.detach(a.id);
    await manager.backup({ volumeId: v.id });
    await manager.deleteBackup(first.id);

    const before = await packSizes(store);
    store.packHeads = 0;
    const dry = await service.gc({ graceMs: 0, dryRun: true, repackThreshold: 0.2 });
    expect(await packSizes(store)).toEqual(before);
    const real = await service.gc({ graceMs: 0, repackThreshold: 0.2 });
    const after = await packSizes(store);
    expect(store.packHeads).toBe(0);

    expect(real).toMatchObject({ packsRepacked: 4, chunksRemoved: 4 });
    expect(dry).toMatchObject({ packsRepacked: 4, chunksRemoved: 4 });
    expect(real.bytesFreed).toBe(sum(before) - sum(after));
    // The new packs' bytes beyond their blobs: trailers (sealed index, length, magic) and padding.
    let overhead = 0;
    for (const [id, size] of after) {
      if (before.has(id)) continue;
      overhead += size - service.repository.index.packs().get(id)!.reduce((n, e) => n + e.length, 0);
    }
    expect(overhead).toBeGreaterThan(0);
    expect(dry.bytesFreed - real.bytesFreed).toBeGreaterThanOrEqual(0);
    expect(dry.bytesFreed - real.bytesFreed).toBeLessThanOrEqual(overhead);
    expect((await service.verify()).problems).toEqual([]);
  });

  it('counts packs deleted whole at their size, in a dry run and a real one', async () => {
    const store = new MemoryObjectStore('mem');
    const { service, volumes, manager } = await chunkedRig(store);
    keep(service);
    const v1 = await filledVolume(volumes, 2 * MiB, 8);
    const v2 = await filledVolume(volumes, 1 * MiB, 9);
    const gone = await manager.backup({ volumeId: v1.id });
    await manager.backup({ volumeId: v2.id });
    await manager.deleteBackup(gone.id);

    const before = await packSizes(store);
    const dry = await service.gc({ graceMs: 0, dryRun: true });
    const real = await service.gc({ graceMs: 0 });
    const freed = sum(before) - sum(await packSizes(store));
    expect(real.packsDeleted).toBeGreaterThan(0);
    expect(real.packsRepacked).toBe(0);
    expect(freed).toBeGreaterThan(2 * MiB);
    expect(real.bytesFreed).toBe(freed);
    expect(dry.bytesFreed).toBe(freed);
  });
});
