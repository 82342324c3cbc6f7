/**
 * What an incremental takes from its parent without storing it again: the chunks the size change
 * touches are read (a shrunk or grown volume's last chunk has another length than the parent's
 * chunk at its place), and a chunk of the parent is reused, equal or not read at all, only when
 * the repository's index holds it. A manifest never names data the repository lacks, nor a chunk
 * of the wrong length (docs/repository-format.md, "What a writer guarantees").
 */
import { describe, expect, it } from 'vitest';
import { MemoryBackupService, MemoryObjectStore, type BackupRecord, type ChunkedBackupService } from '../src/index.js';
import { keys } from './helpers.js';
import { CHUNK, backUp, openRepo, pattern, restored, type Service } from './buffer-backups.js';

describe.each([
  ['shrunk to a size that is not a chunk multiple', 4 * CHUNK, 3 * CHUNK + 100 * 1024],
  ['shrunk within its short last chunk', 3 * CHUNK + 200 * 1024, 3 * CHUNK + 100 * 1024],
  ['shrunk to a chunk multiple', 4 * CHUNK + 100 * 1024, 3 * CHUNK],
  ['grown from a short last chunk', 3 * CHUNK + 100 * 1024, 4 * CHUNK + 8192],
])('an incremental with change tracking of a volume %s', (_, before, after) => {
  // Nothing was written: only the size changed (what the device says of its bytes is the truth).
  const old = pattern(Math.max(before, after), 7);
  const parentData = Buffer.from(old.subarray(0, before));
  const childData = Buffer.alloc(after);
  old.copy(childData, 0, 0, Math.min(before, after));

  it('ChunkedBackupService: the manifest restores byte-exact and verifies clean', async () => {
    const service = await openRepo();
    const parent = await backUp(service, 'full', parentData);
    const child = await backUp(service, 'inc', childData, parent, []);
    expect((await service.verify(child)).problems).toEqual([]);
    expect((await restored(service, child)).equals(childData)).toBe(true);
    // Only the chunks the size change touches were read.
    const touched = before === after ? 0 : Math.ceil(after / CHUNK) - Math.floor(Math.min(before, after) / CHUNK);
    expect(child.stats!.bytesRead).toBeLessThanOrEqual(touched * CHUNK);
    await service.close();
  });

  it('MemoryBackupService: restores byte-exact', async () => {
    const service = new MemoryBackupService('memory', CHUNK);
    const parent = await backUp(service, 'full', parentData);
    const child = await backUp(service, 'inc', childData, parent, []);
    expect((await service.verify(child)).problems).toEqual([]);
    expect((await restored(service, child)).equals(childData)).toBe(true);
  });
});

describe.each([
  ['ChunkedBackupService', () => openRepo()],
  ['MemoryBackupService', async () => new MemoryBackupService('memory', CHUNK)],
])('%s: a volume that shrinks, then grows back, with change tracking throughout', (_, open) => {
  it('restores byte-exact at every step', async () => {
    const service: Service = await open();
    const full = pattern(4 * CHUNK, 21);
    const shrunk = Buffer.from(full.subarray(0, 3 * CHUNK + 1000));
    const regrown = Buffer.concat([shrunk, Buffer.alloc(4 * CHUNK - shrunk.length)]); // the old tail reads as zeros
    const a = await backUp(service, 'a', full);
    const b = await backUp(service, 'b', shrunk, a, []);
    const c = await backUp(service, 'c', regrown, b, []);
    for (const [r, data] of [[a, full], [b, shrunk], [c, regrown]] as const) expect((await restored(service, r)).equals(data)).toBe(true);
    await (service as { close?: () => Promise<void> }).close?.();
  });
});

describe('parent chunks the index does not hold', () => {
  /**
   * A full backup, then its packs and index objects removed (a lost pack, an index object gone):
   * the parent's manifest names chunks the repository no longer has. Returns a fresh service.
   */
  async function parentWithLostData(data: Buffer): Promise<{ service: ChunkedBackupService; parent: BackupRecord; store: MemoryObjectStore }> {
    const store = new MemoryObjectStore('mem');
    const first = await openRepo(store);
    const parent = await backUp(first, 'full', data);
    await first.close();
    for (const k of [...(await keys(store, 'packs/')), ...(await keys(store, 'index/'))]) await store.delete(k);
    return { service: await openRepo(store), parent, store };
  }

  it('an incremental that reads the whole volume stores again the chunks equal to the parent’s', async () => {
    const data = pattern(4 * CHUNK + 4096, 11);
    const { service, parent } = await parentWithLostData(data);
    const child = await backUp(service, 'inc', data, parent); // no change tracking: reads everything
    expect((await service.verify(child)).problems).toEqual([]);
    expect((await restored(service, child)).equals(data)).toBe(true);
    expect(child.stats!.bytesNew).toBe(data.length);
    await service.close();
  });

  it('an incremental with change tracking reads and stores the unchanged chunks the index lacks', async () => {
    const data = pattern(4 * CHUNK + 4096, 12);
    const { service, parent } = await parentWithLostData(data);
    const changedData = Buffer.from(data);
    changedData.fill(1, CHUNK, CHUNK + 10); // chunk 1 changed
    const child = await backUp(service, 'inc', changedData, parent, [{ offset: CHUNK, length: 10 }]);
    expect((await service.verify(child)).problems).toEqual([]);
    expect((await restored(service, child)).equals(changedData)).toBe(true);
    expect(child.stats!.bytesRead).toBe(data.length);
    await service.close();
  });

  it('only the chunks the index lacks are read: the others still come from the parent unread', async () => {
    const data = pattern(6 * CHUNK, 13);
    const store = new MemoryObjectStore('mem');
    const first = await openRepo(store);
    const parent = await backUp(first, 'full', data);
    const lone = data.subarray(2 * CHUNK, 3 * CHUNK);
    await first.close();
    // A repository that lacks chunk 2 only: every pack and index object removed, and the other
    // chunks stored again by another backup.
    for (const k of [...(await keys(store, 'packs/')), ...(await keys(store, 'index/'))]) await store.delete(k);
    const second = await openRepo(store);
    const others = Buffer.from(data);
    others.fill(0, 2 * CHUNK, 3 * CHUNK);
    await backUp(second, 'others', others);
    const child = await backUp(second, 'inc', data, parent, []);
    expect(child.stats!.bytesRead).toBe(lone.length);
    expect((await second.verify(child)).problems).toEqual([]);
    expect((await restored(second, child)).equals(data)).toBe(true);
    await second.close();
  });

  it('with every chunk held, a change-tracking incremental still reads only what changed', async () => {
    const data = pattern(6 * CHUNK, 14);
    const service = await openRepo();
    const parent = await backUp(service, 'full', data);
    const child = await backUp(service, 'inc', data, parent, [{ offset: 4 * CHUNK, length: 1 }]);
    expect(child.stats).toMatchObject({ bytesRead: CHUNK, bytesNew: 0 });
    expect((await restored(service, child)).equals(data)).toBe(true);
    await service.close();
  });
});
