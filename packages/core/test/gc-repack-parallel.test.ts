/**
 * GC's repack reads a group of packs per fetch (gc-repack.ts), so that the reads of several packs
 * are in flight at once (on a store with latency, a pack-at-a-time repack is several times
 * slower); the group is bounded by the fetch batch (and by REPACK_GROUP_BYTES of live chunks), and
 * a dry run makes the same reads. Over a memory store that counts the packs being read at once.
 */
import { describe, expect, it } from 'vitest';
import { ChunkedBackupService, MemoryObjectStore, type ByteRange, type CallOptions } from '../src/index.js';
import { collectGarbage } from '../src/repository/garbage-collector.js';
import { CHUNK, backUp, pattern, restored } from './buffer-backups.js';
import { FAST_KDF, MiB } from './helpers.js';

/**
 * A memory store whose gets of packs wait for the next turn of the event loop (a store's latency,
 * without timing anything), recording every such get and the most distinct packs read at once.
 */
class PackReadsStore extends MemoryObjectStore {
  private readonly reading = new Map<string, number>();
  maxPacksAtOnce = 0;
  reads: string[] = [];

  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (!key.startsWith('packs/')) return super.get(key, range, options);
    this.reads.push(`${key}@${range?.offset ?? 0}+${range?.length ?? 'all'}`);
    this.reading.set(key, (this.reading.get(key) ?? 0) + 1);
    this.maxPacksAtOnce = Math.max(this.maxPacksAtOnce, this.reading.size);
    try {
      await new Promise((resolve) => setImmediate(resolve));
      return await super.get(key, range, options);
    } finally {
      const n = this.reading.get(key)! - 1;
      if (n === 0) this.reading.delete(key);
      else this.reading.set(key, n);
    }
  }

  reset(): void {
    this.maxPacksAtOnce = 0;
    this.reads = [];
  }
}

/**
 * Backup `first` of 12 chunks (4 packs of 3, uncompressed), backup `second` of the same with
 * chunks 1, 4, 7 and 10 changed, then `first` deleted: each of the 4 packs is a third dead, and
 * GC repacks all of them (2 live chunks each).
 */
async function scene(store: PackReadsStore) {
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: 1 * MiB, compression: 'none', kdf: FAST_KDF } });
  const data = pattern(12 * CHUNK, 71);
  const first = await backUp(service, 'first', data);
  const packs = new Set([...service.repository.index.packs().keys()]);
  expect(packs.size).toBe(4);
  const changed = Buffer.from(data);
  for (const k of [1, 4, 7, 10]) pattern(CHUNK, 100 + k).copy(changed, k * CHUNK);
  const second = await backUp(service, 'second', changed);
  await service.delete(first);
  store.reset();
  return { service, packs, second, changed };
}

describe('gc repack reads', () => {
  it('has reads of more than one pack in flight at once, and the backup kept restores byte-exact', async () => {
    const store = new PackReadsStore('mem');
    const { service, packs, second, changed } = await scene(store);

    const report = await service.gc({ graceMs: 0 });
    expect(report).toMatchObject({ packsRepacked: 4, packsDeleted: 0, chunksUnreadable: 0, packsLeftUnreadable: 0 });
    expect(new Set(store.reads.map((r) => r.split('@')[0]))).toEqual(new Set([...packs].map((p) => `packs/${p}`)));
    expect(store.maxPacksAtOnce).toBeGreaterThan(1);

    expect([...service.repository.index.packs().keys()].filter((p) => packs.has(p))).toEqual([]);
    expect((await service.verify(second)).problems).toEqual([]);
    expect((await restored(service, second)).equals(changed)).toBe(true);
    await service.close();
  });

  it('reads one pack at a time when the fetch batch holds only one pack’s live chunks', async () => {
    const store = new PackReadsStore('mem');
    const { service, second, changed } = await scene(store);

    const report = await collectGarbage(service.repository, { graceMs: 0 }, 2);
    expect(report.packsRepacked).toBe(4);
    expect(store.reads.length).toBeGreaterThanOrEqual(4);
    expect(store.maxPacksAtOnce).toBe(1);
    expect((await restored(service, second)).equals(changed)).toBe(true);
    await service.close();
  });

  it('gc({ dryRun }) makes the same pack reads as the run that follows', async () => {
    const store = new PackReadsStore('mem');
    const { service } = await scene(store);

    const dry = await service.gc({ graceMs: 0, dryRun: true });
    const dryReads = [...store.reads].sort();
    const dryMax = store.maxPacksAtOnce;
    store.reset();
    const real = await service.gc({ graceMs: 0 });
    expect(real.packsRepacked).toBe(dry.packsRepacked);
    expect(dryReads.length).toBeGreaterThan(0);
    expect([...store.reads].sort()).toEqual(dryReads);
    expect(dryMax).toBeGreaterThan(1);
    await service.close();
  });
});
