/**
 * Extra and damaged copies of chunks, written straight into a repository's packs through its store
 * (no backup): for tests of what verify, restore and GC do with them. Pure test scaffolding.
 */
import { expect } from 'vitest';
import { ChunkCodec } from '../src/repository/codec.js';
import { PackWriter } from '../src/repository/pack-writer.js';
import type { Repository } from '../src/repository/repository.js';

/**
 * Writes one pack holding a copy of each of `chunks` (uncompressed, each at most the repository's
 * chunk size), in that order, and returns its id. The index learns it after every pack known so far,
 * so a chunk already stored keeps resolving to its earlier copy and lists this one last among its
 * other copies.
 */
export async function writePack(repo: Repository, chunks: Buffer[]): Promise<string> {
  const writer = new PackWriter(repo.store, repo.codec, repo.index, repo.config.packSize, ChunkCodec.maxEncodedLength(repo.config.chunkSize));
  for (const c of chunks) {
    const id = repo.codec.chunkId(c);
    await writer.add(id, repo.codec.encode(c, 'none', id), c.length);
  }
  await writer.finish();
  const packs = new Set(chunks.map((c) => [repo.index.get(repo.codec.chunkId(c))!, ...repo.index.otherCopies(repo.codec.chunkId(c))].at(-1)!.pack));
  expect(packs.size).toBe(1);
  return [...packs][0]!;
}

/** Flips a byte in the middle of chunk `id`'s copy in `pack` (default: the one the index resolves it to), through the store. */
export async function damageCopy(repo: Repository, id: string, pack = repo.index.get(id)!.pack): Promise<void> {
  const l = [repo.index.get(id)!, ...repo.index.otherCopies(id)].find((c) => c.pack === pack)!;
  const bytes = await repo.store.get(`packs/${pack}`);
  bytes[l.offset + Math.floor(l.length / 2)]! ^= 0x40;
  await repo.store.put(`packs/${pack}`, bytes);
}
