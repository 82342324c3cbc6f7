/**
 * A chunk list page already stored is reused by a new backup only once read back whole and good:
 * a damaged one (same key, bad bytes) is overwritten with the good bytes, so that the new backup
 * is not born naming a damaged page (chunk-map.ts writePage). Over the memory store and the real
 * posix store.
 */
import { describe, expect, it } from 'vitest';
import { ChunkList } from '../src/index.js';
import { ChunkCodec } from '../src/repository/codec.js';
import { readPage, writePage } from '../src/repository/chunk-map.js';
import { backUp, CHUNK, openRepo, pattern, restored } from './buffer-backups.js';
import { keys } from './helpers.js';
import { memoryAndPosixStores } from './store-kinds.js';

const stores = memoryAndPosixStores('page-reuse');

const ids = (n: number, seed: number): string[] => Array.from({ length: n }, (_, i) => new ChunkCodec(undefined, undefined).chunkId(Buffer.from(`chunk ${seed} ${i}`)));

describe.each(stores)('reuse of a stored chunk list page (%s)', (_, makeStore) => {
  it('reuses a good page without writing it, and overwrites a damaged or cut one', async () => {
    const store = await makeStore();
    const codec = new ChunkCodec(undefined, undefined);
    const list = ChunkList.from([...ids(3, 1), null]);
    const first = await writePage(store, codec, list);
    expect(first.stored).toBeGreaterThan(0);
    const key = `chunklists/${first.id}`;
    const good = await store.get(key);
    expect(await writePage(store, codec, list)).toEqual({ id: first.id, stored: 0 });

    for (const damage of [(b: Buffer) => void (b[Math.floor(b.length / 2)]! ^= 0x40), (b: Buffer) => b.subarray(0, b.length - 7)]) {
      const bad = Buffer.from(good);
      await store.put(key, damage(bad) ?? bad);
      await expect(readPage(store, codec, first.id!)).rejects.toMatchObject({ code: 'CORRUPT' });
      expect(await writePage(store, codec, list)).toEqual(first);
      expect((await readPage(store, codec, first.id!)).toJSON()).toEqual(list.toJSON());
    }
  });

  it('a backup whose page equals a damaged stored one is born whole, and repairs the older backup', async () => {
    const store = await makeStore();
    const service = await openRepo(store);
    const data = Buffer.concat([pattern(CHUNK, 81), pattern(CHUNK, 82)]);
    const older = await backUp(service, 'older', data);
    const pages = await keys(store, 'chunklists/');
    expect(pages).toHaveLength(1);
    const bytes = await store.get(pages[0]!);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
    await store.put(pages[0]!, bytes);
    await service.close();

    const other = await openRepo(store);
    const newer = await backUp(other, 'newer', data); // the same chunks: the same page
    expect(await keys(store, 'chunklists/')).toEqual(pages);
    expect((await other.verify(newer)).problems).toEqual([]);
    expect((await other.verify(older)).problems).toEqual([]);
    expect((await restored(other, newer)).equals(data)).toBe(true);
    await other.close();
  });
});
