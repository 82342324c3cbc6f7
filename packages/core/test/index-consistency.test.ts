/**
 * The chunk index agrees with the store: a chunk is offered for reuse only while an index object
 * names its pack and the pack exists, whatever another process's GC, a failed index write or a
 * concurrent backup did, or a GC of its own that failed half-way; GC never deletes a pack a
 * backup needs.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  CairnError,
  MemoryObjectStore,
  MemoryVolumeDriver,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
} from '../src/index.js';
import { ChunkCodec, encodeDocument } from '../src/repository/codec.js';
import { ChunkIndex, indexLabel, toTuples } from '../src/repository/chunk-index.js';
import { readPackTrailer } from '../src/repository/pack-trailer.js';
import { PackWriter } from '../src/repository/pack-writer.js';
import { MiB, chunkedRig, contents, expectCode, filledVolume, keys } from './helpers.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';

const hexId = (label: string | number): string => createHash('sha256').update(String(label)).digest('hex');

/** An encrypted service over `store` (created on first use) and a manager over it. */
const open = (store: ObjectStore, volumes?: MemoryVolumeDriver) => chunkedRig(store, { passphrase: 'pw', volumes });

describe('the chunk index of a long-running process', () => {
  it('forgets packs another process\'s GC deleted: the next backup stores the data again, and verifies from anywhere', async () => {
    const store = new MemoryObjectStore('mem');
    const server = await open(store); // e.g. `cairn serve`, open for days
    const v = await filledVolume(server.volumes, 4 * MiB, 41);
    const first = await server.manager.backup({ volumeId: v.id });
    const other = await open(store); // another machine deletes the backup and collects
    await other.manager.deleteBackup(first.id);
    expect((await other.service.gc({ graceMs: 0 })).packsDeleted).toBeGreaterThan(0);
    expect(await keys(store, 'packs/')).toEqual([]);
    const again = await server.manager.backup({ volumeId: v.id });
    expect(again.stats!.bytesNew).toBe(4 * MiB); // nothing to reuse: every pack is gone
    const fresh = await open(store, server.volumes);
    expect((await fresh.service.verify()).problems).toEqual([]);
    await Promise.all([server.service.close(), other.service.close(), fresh.service.close()]);
  });

  it('follows another process\'s repack: it restores and verifies from the new packs', async () => {
    const store = new MemoryObjectStore('mem');
    const server = await open(store);
    const v = await filledVolume(server.volumes, 4 * MiB, 42);
    const a = await server.manager.backup({ volumeId: v.id });
    const att = await server.volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await att.device.write(MiB, Buffer.alloc(2 * MiB, 0x5a)); // half the data changes
    await server.volumes.detach(att.id);
    const b = await server.manager.backup({ volumeId: v.id });
    await server.service.repository.index.refresh(); // the server has seen every pack
    const other = await open(store);
    await other.manager.deleteBackup(a.id);
    expect((await other.service.gc({ graceMs: 0, repackThreshold: 0.01 })).packsRepacked).toBeGreaterThan(0);
    const restored = await server.manager.restore({ backupId: b.id, newVolume: { name: 'r' } });
    expect((await contents(server.volumes, restored.volume.id)).equals(await contents(server.volumes, v.id))).toBe(true);
    expect((await server.service.verify()).problems).toEqual([]);
    await Promise.all([server.service.close(), other.service.close()]);
  });
});

/** A store whose pack deletes fail while `failPackDeletes` > 0, as a transient outage would. */
class FlakyPackDeleteStore extends MemoryObjectStore {
  failPackDeletes = 0;
  override async delete(key: string): Promise<void> {
    if (key.startsWith('packs/') && this.failPackDeletes > 0) {
      this.failPackDeletes--;
      throw new CairnError('UNAVAILABLE', '503 slow down');
    }
    return super.delete(key);
  }
}

describe('a GC that fails after rewriting index objects, before deleting the packs they named', () => {
  /**
   * Backups `a` and `b` sharing two thirds of their chunks, `a` deleted, then a GC that repacks
   * every pack (a third dead) and fails at its first pack delete: the old packs stay in the store,
   * named by no index object, and this process's index still lists them.
   */
  async function interruptedGc() {
    const store = new FlakyPackDeleteStore('mem');
    const service = await openRepo(store);
    const base = pattern(8 * CHUNK, 31);
    const a = await backUp(service, 'a', base);
    const data = Buffer.from(base);
    for (const i of [1, 4, 7]) data.fill(0x11 + i, i * CHUNK, (i + 1) * CHUNK);
    const b = await backUp(service, 'b', data);
    await service.delete(a);
    store.failPackDeletes = 1;
    await expectCode(service.gc({ graceMs: 0 }), 'UNAVAILABLE');
    return { store, service, b, data };
  }

  it('the next GC of the same process deletes the orphaned packs, never the copies the backup needs', async () => {
    const { store, service, b, data } = await interruptedGc();
    // Packs below the threshold are not repacked: an orphan must not be taken for a live copy.
    await service.gc({ graceMs: 0, repackThreshold: 0.99 });
    const other = await openRepo(store);
    expect((await other.verify()).problems).toEqual([]);
    expect((await restored(other, b)).equals(data)).toBe(true);
    await Promise.all([service.close(), other.close()]);
  });

  it('a backup of the same process stores again the chunks only the orphaned packs hold', async () => {
    const { store, service } = await interruptedGc();
    // `a` again: its chunks 1, 4 and 7 are in no named pack (the repack left them behind).
    const base = pattern(8 * CHUNK, 31);
    const again = await backUp(service, 'c', base);
    await service.gc({ graceMs: 0 }); // deletes the orphans
    const other = await openRepo(store);
    expect((await other.verify()).problems).toEqual([]);
    expect((await restored(other, again)).equals(base)).toBe(true);
    expect(again.stats!.bytesNew).toBe(3 * CHUNK);
    await Promise.all([service.close(), other.close()]);
  });
});

/** A store whose index puts fail while `failIndexPuts` > 0, as a transient outage would. */
class FlakyIndexStore extends MemoryObjectStore {
  failIndexPuts = 0;
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (key.startsWith('index/') && this.failIndexPuts > 0) {
      this.failIndexPuts--;
      throw new CairnError('UNAVAILABLE', '503 slow down');
    }
    return super.put(key, data, options);
  }
}

describe('packs not yet named by an index object', () => {
  it('are not in the shared index: a failed index write keeps them out, and abandon() names them', async () => {
    const store = new FlakyIndexStore('mem');
    const codec = new ChunkCodec(undefined, undefined);
    const index = new ChunkIndex(store, codec);
    const writer = new PackWriter(store, codec, index, 1024 * 1024, 300 * 1024, 2);
    const blobs = Array.from({ length: 20 }, (_, i) => Buffer.alloc(100 * 1024, i + 1));
    for (const [i, b] of blobs.entries()) await writer.add(hexId(i), b, b.length);
    store.failIndexPuts = 1;
    await expect(writer.finish()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect((await keys(store, 'packs/')).length).toBeGreaterThan(1); // the packs landed…
    expect(blobs.some((_, i) => index.has(hexId(i)))).toBe(false); // …but nobody may reuse them
    await writer.abandon();
    expect(await keys(store, 'index/')).toHaveLength(1);
    expect(blobs.every((_, i) => index.has(hexId(i)))).toBe(true);
    const fresh = new ChunkIndex(store, codec);
    await fresh.refresh();
    expect(blobs.every((_, i) => fresh.get(hexId(i))?.pack === index.get(hexId(i))?.pack)).toBe(true);
  });
});

describe('gc and packs no index object names', () => {
  it('adopts those holding chunks a backup references instead of deleting them, keeps unreadable ones while chunks are missing, deletes the rest', async () => {
    const store = new FlakyIndexStore('mem');
    const { service, manager, volumes } = await open(store);
    const v = await filledVolume(volumes, 4 * MiB, 44);
    const b = await manager.backup({ volumeId: v.id });
    // As an older Cairn could leave it: the backup's packs named by no index object, one of them
    // lost for good; an unreadable object among the packs; and the true orphans of a backup that
    // could name none of its packs (both index puts failed).
    const packs = await keys(store, 'packs/');
    for (const k of await keys(store, 'index/')) await store.delete(k);
    await store.delete(packs[0]!);
    const junk = `packs/${hexId('junk')}`;
    await store.put(junk, Buffer.alloc(4096, 7));
    const other = await filledVolume(volumes, 2 * MiB, 46);
    store.failIndexPuts = 2;
    await expect(manager.backup({ volumeId: other.id })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    const orphans = (await keys(store, 'packs/')).length - (packs.length - 1) - 1;
    expect(orphans).toBeGreaterThan(0);
    await service.close();

    const { service: s2 } = await open(store, volumes);
    const report = await s2.gc({ graceMs: 0 });
    expect(report).toMatchObject({ packsAdopted: packs.length - 1, packsDeleted: orphans });
    expect((await keys(store, 'packs/')).sort()).toEqual([...packs.slice(1), junk].sort());
    // Only what the lost pack held is missing now.
    const problems = (await s2.verify()).problems;
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.every((p) => p.code === 'NOT_FOUND' && p.backupId === b.id)).toBe(true);
    await s2.close();
  });

  it('adopted packs restore byte-exact', async () => {
    const store = new MemoryObjectStore('mem');
    const { service, manager, volumes } = await open(store);
    const v = await filledVolume(volumes, 4 * MiB, 47);
    const b = await manager.backup({ volumeId: v.id });
    await service.close();
    for (const k of await keys(store, 'index/')) await store.delete(k);
    const { service: s2, manager: m2 } = await open(store, volumes);
    expect((await s2.gc({ graceMs: 0 })).packsDeleted).toBe(0);
    expect((await s2.verify()).problems).toEqual([]);
    const restored = await m2.restore({ backupId: b.id, newVolume: { name: 'r' } });
    expect((await contents(volumes, restored.volume.id)).equals(await contents(volumes, v.id))).toBe(true);
    await s2.close();
  });

  it('skips a backup deleted after it listed the manifests', async () => {
    const ghost = 'manifests/00000000-0000-4000-8000-000000000000';
    class GhostStore extends MemoryObjectStore {
      override async *list(prefix: string): AsyncIterable<ObjectInfo> {
        yield* super.list(prefix);
        if (prefix === 'manifests/') yield { key: ghost, size: 10, modifiedAt: new Date().toISOString() };
      }
    }
    const store = new GhostStore('mem');
    const { service, manager, volumes } = await open(store);
    const v = await filledVolume(volumes, 2 * MiB, 45);
    await manager.backup({ volumeId: v.id });
    expect(await service.gc({ graceMs: 0 })).toMatchObject({ backups: 1, packsDeleted: 0 });
    await service.close();
  });
});

describe('a format-1 index object under a key that is no pack id', () => {
  it('is damaged as a whole, in the form Cairn writes too: no pack of that id is known, gc() refuses CORRUPT and verify() names it', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const data = pattern(2 * CHUNK, 48);
    const b = await backUp(service, 'b', data);
    const [pack] = await keys(store, 'packs/');
    const packId = pack!.slice('packs/'.length);
    const codec = service.repository.codec;
    // A pack's own index, as format 1 stored it, but under a foreign, path-like key (the store
    // takes it: every segment is a key segment): its pack id would be `old/<packId>`.
    const foreign = `old/${packId}`;
    const entries = await readPackTrailer(store, codec, packId);
    await store.put(`index/${foreign}`, encodeDocument(codec, { version: 1, blobs: toTuples(entries) }, indexLabel(foreign)));
    await service.close();

    const other = await openRepo(store);
    await other.repository.index.refresh();
    expect([...other.repository.index.damaged]).toEqual([foreign]);
    expect([...other.repository.index.packs().keys()]).toEqual([packId]);
    expect([...other.repository.index.indexedPacks()]).toEqual([packId]);
    await expectCode(other.gc({ graceMs: 0 }), 'CORRUPT');
    const problems = (await other.verify()).problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ code: 'CORRUPT' });
    expect(problems[0]!.message).toContain(`index/${foreign}`);
    expect((await restored(other, b)).equals(data)).toBe(true);
    await other.close();
  });
});
